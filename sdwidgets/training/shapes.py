"""The recipe of the embedded model: ``python -m sdwidgets.training.shapes [stage]``.

Stages (each resumable, skipped when its output exists; ``all`` runs them in order):

    vae         train the world's codec (latent factor 4 or 8 chosen by measured pixel accuracy)
    base        pre-encode the captioned world, train text encoder + UNet jointly
    controlnet  train a canny ControlNet with the base frozen
    lora        train the bundled ``ring`` LoRA with :func:`sdwidgets.training.lora.train_lora`
    export      write the diffusers folder to sdwidgets/assets/shapes (fp16 safetensors)
    evaluate    score the shipped folder (table of issue 3)

Working files go to ``training-work/`` (git-ignored); timings to ``training-work/timings.json``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import world

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("SDW_TRAIN_WORK", ROOT / "training-work"))
ASSET = Path(__file__).resolve().parents[1] / "assets" / "shapes"
TIMINGS = WORK / "timings.json"
SEED = 1234

# Wall-clock budgets (seconds) of the stages on the 2-core CPU.
VAE_PROBE_S = float(os.environ.get("SDW_VAE_PROBE_S", 180))
VAE_S = float(os.environ.get("SDW_VAE_S", 780))
BASE_S = float(os.environ.get("SDW_BASE_S", 2400))
CONTROLNET_S = float(os.environ.get("SDW_CONTROLNET_S", 600))
LORA_S = float(os.environ.get("SDW_LORA_S", 270))


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def record(key: str, value) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    data = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    data[key] = value
    TIMINGS.write_text(json.dumps(data, indent=1))


def recorded() -> dict:
    return json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}


def lr_at(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


class Budget:
    """Cosine schedule over a wall-clock budget: the step count is re-estimated as we go."""

    def __init__(self, seconds: float, elapsed: float = 0.0):
        self.seconds, self.t0 = seconds, time.time() - elapsed

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0

    def total_steps(self, step: int) -> int:
        if step < 20:
            return 10 ** 9
        return max(step + 1, int(step * self.seconds / max(self.elapsed, 1e-6)))

    def done(self) -> bool:
        return self.elapsed >= self.seconds


# ----------------------------------------------------------------------------- VAE
def vae_config(factor: int) -> dict:
    blocks = (32, 32, 64) if factor == 4 else (32, 32, 64, 64)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * len(blocks),
        up_block_types=["UpDecoderBlock2D"] * len(blocks),
        block_out_channels=list(blocks), layers_per_block=1, norm_num_groups=16,
        sample_size=64,
    )


def heldout_images(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Held-out renders (half captioned-world incl. rings, half broad world) and their labels."""
    rng = np.random.default_rng(999_999)
    imgs = []
    for i in range(n):
        if i % 2 == 0:
            imgs.append(world.render(world.sample_scene(rng, shapes=world.SHAPES + ["ring"])))
        else:
            imgs.append(world.render_broad(rng))
    imgs = np.stack(imgs)
    return imgs, np.stack([world.nearest_palette(im) for im in imgs])


@torch.no_grad()
def vae_accuracy(vae, imgs: np.ndarray, labels: np.ndarray, rings_only: bool = False) -> float:
    vae.eval()
    out = []
    for i in range(0, len(imgs), 64):
        x = world.to_tensor(imgs[i:i + 64])
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
        y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        out.append(y)
    y = np.concatenate(out)
    pred = np.stack([world.nearest_palette(im) for im in y])
    vae.train()
    return float((pred == labels).mean())


def _vae_train(vae, opt, state: dict, seconds: float, ckpt: Path, tag: str) -> None:
    from tqdm.auto import tqdm

    rng = np.random.default_rng(SEED + state["step"])
    budget = Budget(seconds, state.get("elapsed", 0.0))
    bar = tqdm(desc=f"vae {tag}", unit="step", mininterval=10, file=sys.stdout)
    last_save = time.time()
    while not budget.done():
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.total_steps(step), 5e-4, warmup=100)
        x = world.to_tensor(np.stack([world.render_broad(rng) for _ in range(32)]))
        post = vae.encode(x).latent_dist
        z = post.sample()
        y = vae.decode(z).sample
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        state["step"] = step + 1
        state["elapsed"] = budget.elapsed
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if time.time() - last_save > 90:
            torch.save(dict(model=vae.state_dict(), opt=opt.state_dict(), state=state), ckpt)
            last_save = time.time()
    bar.close()
    torch.save(dict(model=vae.state_dict(), opt=opt.state_dict(), state=state), ckpt)


def _vae_for(factor: int, tag: str, seconds: float):
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED + factor)
    vae = AutoencoderKL(**vae_config(factor))
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-4, weight_decay=0.0)
    ckpt = WORK / f"vae_f{factor}_{tag}.pt"
    state = {"step": 0, "elapsed": 0.0}
    if ckpt.exists():
        c = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        state = c["state"]
    if state["elapsed"] < seconds:
        _vae_train(vae, opt, state, seconds, ckpt, f"f{factor} {tag}")
    return vae, state


def stage_vae() -> None:
    out = WORK / "vae"
    if (out / "config.json").exists():
        log("vae: exists, skipped")
        return
    t0 = time.time()
    imgs, labels = heldout_images()
    ring_imgs, ring_labels = ring_heldout()
    probe = {}
    for factor in (4, 8):
        vae, state = _vae_for(factor, "probe", VAE_PROBE_S)
        acc = vae_accuracy(vae, imgs, labels)
        probe[factor] = acc
        log(f"vae probe f={factor}: {state['step']} steps, pixel accuracy {acc:.4f}")
    # f=8 is faster downstream; take it unless f=4 codes the world clearly better.
    factor = 8 if probe[8] >= probe[4] - 0.005 else 4
    log(f"vae: chose latent factor {factor}")
    record("vae_probe", {f"f{k}": v for k, v in probe.items()} | {"probe_s": VAE_PROBE_S, "chosen": factor})
    # continue the chosen probe for the rest of the budget
    probe_ckpt = WORK / f"vae_f{factor}_probe.pt"
    final_ckpt = WORK / f"vae_f{factor}_final.pt"
    if not final_ckpt.exists():
        final_ckpt.write_bytes(probe_ckpt.read_bytes())
    vae, state = _vae_for(factor, "final", VAE_S)
    acc = vae_accuracy(vae, imgs, labels)
    ring_acc = vae_accuracy(vae, ring_imgs, ring_labels)
    # latent scaling factor: 1/std of the latents of the captioned world
    rng = np.random.default_rng(SEED + 7)
    with torch.no_grad():
        x = world.to_tensor(np.stack([world.render(world.sample_scene(rng)) for _ in range(512)]))
        z = torch.cat([vae.encode(x[i:i + 128]).latent_dist.mean for i in range(0, 512, 128)])
    sf = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(out)
    record("vae", dict(factor=factor, steps=state["step"], train_s=round(state["elapsed"]),
                       pixel_accuracy=acc, ring_pixel_accuracy=ring_acc, scaling_factor=sf,
                       stage_wall_s=round(time.time() - t0)))
    log(f"vae: f={factor} accuracy {acc:.4f} (rings {ring_acc:.4f}) scaling {sf:.4f}")


def ring_heldout(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(424242)
    imgs = np.stack([world.render(world.sample_scene(rng, shapes=["ring"])) for _ in range(n)])
    return imgs, np.stack([world.nearest_palette(im) for im in imgs])


# ----------------------------------------------------------------------------- main
STAGES: dict = {"vae": stage_vae}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(int(os.environ.get("SDW_THREADS", 2)))
    WORK.mkdir(parents=True, exist_ok=True)
    which = argv[0] if argv else "all"
    names = list(STAGES) if which == "all" else [which]
    for name in names:
        if name not in STAGES:
            raise SystemExit(f"unknown stage {name!r}; choose from all, {', '.join(STAGES)}")
        t0 = time.time()
        STAGES[name]()
        log(f"stage {name}: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
