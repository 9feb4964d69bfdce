"""The denoiser (text encoder + UNet, trained jointly): the captioned world encoded once
(``world_latents``), the ``base`` stage, the warm restarts that continue it from its EMA weights
(``restart``, ``restart2``, ``sharpen``, ``sharpen2``, ``polish``), and the position probe that
decides whether ``restart2`` runs. The loss is :func:`.losses.base_loss`."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import world
from .architecture import text_config, training_scheduler, unet_config
from .losses import base_loss
from .noise import BASE_NOISE, RESTART2_NOISE, RESTART_NOISE
from .workspace import (DEFAULT_BUDGETS, SEED, Budgets, log, optimise, record, recorded, resume, saver, train_for,
                        work_dir, work_pipe)


def load_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(work_dir() / "vae").eval().requires_grad_(False)


def world_latents(n_train: int = DEFAULT_BUDGETS.n_train) -> tuple[list[world.Scene], torch.Tensor]:
    """The captioned training world (``n_train`` scenes), encoded once by the VAE (mean *
    scaling_factor) and cached in the working folder."""
    path = work_dir() / "latents.pt"
    if path.exists():
        d = torch.load(path, weights_only=False)
        return [world.Scene(**s) for s in d["scenes"]], d["latents"]
    from tqdm.auto import tqdm

    vae = load_vae()
    rng = np.random.default_rng(SEED + 1)
    scenes = [world.sample_scene(rng) for _ in range(n_train)]
    lat = []
    t0 = time.time()
    with torch.no_grad():
        for i in tqdm(range(0, n_train, 256), desc="encode", mininterval=10, file=sys.stdout):
            x = world.to_tensor(np.stack([world.render(s) for s in scenes[i:i + 256]]))
            lat.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    lat = torch.cat(lat)
    torch.save(dict(scenes=[s.__dict__ for s in scenes], latents=lat), path)
    record("encode", dict(images=n_train, wall_s=round(time.time() - t0)))
    return scenes, lat


class EMA:
    """Exponential moving average of a model's weights (checkpointed like a module)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.998):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        floats, sources = [], []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                floats.append(self.shadow[k])
                sources.append(v.detach())
            else:
                self.shadow[k].copy_(v)
        # one fused update per step instead of two ops per tensor (matters on a GPU)
        torch._foreach_mul_(floats, d)
        torch._foreach_add_(floats, sources, alpha=1 - d)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, shadow: dict) -> None:
        self.shadow = shadow


BASE_BATCH = 64


def _train_base(unet, te, tok, ckpt: Path, seconds: float, lr: float, warmup: int,
                n_train: int = DEFAULT_BUDGETS.n_train, **loss_kw) -> dict:
    """Train text encoder + UNet jointly (EMA kept) for ``seconds``, resumable from ``ckpt``;
    leaves the EMA weights in ``unet``/``te`` and returns what it did, ``loss_kw`` (the noise
    that :func:`base_loss` got) included, for the timings record."""
    scenes, lat = world_latents(n_train)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema_u, ema_t = EMA(unet), EMA(te)
    sched = training_scheduler()
    modules = {"unet": unet, "te": te, "ema_u": ema_u, "ema_t": ema_t}
    state = resume(ckpt, modules, opt)
    log(f"base: unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, "
        f"text encoder {sum(p.numel() for p in te.parameters()) / 1e6:.2f} M, {len(scenes)} images")

    def step_fn(step: int) -> float:
        loss = optimise(opt, base_loss(unet, te, tok, sched, scenes, lat, step, BASE_BATCH, **loss_kw), params)
        ema_u.update(unet, step)
        ema_t.update(te, step)
        return loss

    final_loss = train_for(ckpt.stem, seconds, state, opt, lr, warmup, step_fn,
                           saver(ckpt, modules, opt, state))
    unet.load_state_dict(ema_u.shadow)
    te.load_state_dict(ema_t.shadow)
    log(f"{ckpt.stem}: {state['step']} steps, loss {final_loss:.4f}")
    return dict(steps=state["step"], batch=BASE_BATCH, lr=lr, train_s=round(state["elapsed"]), final_loss=final_loss,
                **loss_kw, loss_curve_every_50=state["losses"])


def stage_base(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    out = work_dir() / "base"
    if (out / "unet" / "config.json").exists():
        log("base: exists, skipped")
        return
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from .tokenizer import write_tokenizer

    t_stage = time.time()
    factor = recorded()["vae"]["factor"]
    tok = write_tokenizer(out / "tokenizer")
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**unet_config(factor))
    te = CLIPTextModel(text_config(tok))
    info = _train_base(unet, te, tok, work_dir() / "base.pt", budgets.base_s, 6e-4, 300, budgets.n_train, **BASE_NOISE)
    unet.save_pretrained(out / "unet")
    te.save_pretrained(out / "text_encoder")
    record("base", info | dict(stage_wall_s=round(time.time() - t_stage),
                               unet_params=sum(p.numel() for p in unet.parameters()),
                               text_params=sum(p.numel() for p in te.parameters())))


RESTART_LR = 3e-4
POLISH_LR = 1e-4
# The polish stage's noise: uniform timesteps, and white noise where the image is already
# visible (t < 500), so edges and corners get the training share that the layout got before.
POLISH_NOISE = dict(high_noise_share=0.0, white_below=500)


# A warm restart that leaves the position probe at or above this has taught position words: the
# second restart is then skipped and its time goes to sharpen (shape).
POSITION_LEARNT = 0.95


def position_probe(n: int = DEFAULT_BUDGETS.probe_n) -> float:
    """Share of ``n`` grammar prompts (not the evaluation's: another seed) whose shape the working
    base places where the prompt says, at the default guidance and 20 Euler steps."""
    from .evaluate import default_guidance, eval_prompts, generate, grammar_hits

    scenes = eval_prompts(n, seed=SEED + 21)
    with torch.no_grad():
        images = generate(work_pipe(), [world.caption_of(sc) for sc in scenes], list(range(n)),
                          guidance_scale=default_guidance())
    return round(float(np.mean(grammar_hits(scenes, images)["position"])), 4)


def _continue_base(name: str, seconds: float, lr: float, warmup: int, n_train: int = DEFAULT_BUDGETS.n_train,
                   probe_n: int = 0, **loss_kw) -> None:
    """Continue the base from its EMA weights with a fresh AdamW and a new cosine schedule;
    ``base/<name>.json`` marks the stage done (``probe_n``: it also holds :func:`position_probe`
    on that many prompts; 0: no probe). ``n_train``: see :func:`world_latents`."""
    out = work_dir() / "base"
    done = out / f"{name}.json"
    if done.exists():
        log(f"{name}: exists, skipped")
        return
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    t_stage = time.time()
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    unet = UNet2DConditionModel.from_pretrained(out / "unet")
    te = CLIPTextModel.from_pretrained(out / "text_encoder")
    info = _train_base(unet, te, tok, work_dir() / f"{name}.pt", seconds, lr, warmup, n_train, **loss_kw)
    unet.save_pretrained(out / "unet")
    te.save_pretrained(out / "text_encoder")
    if probe_n:
        info["position_probe"] = position_probe(probe_n)
        log(f"{name}: position probe {info['position_probe']:.1%}")
    info["stage_wall_s"] = round(time.time() - t_stage)
    done.write_text(json.dumps(info))
    record(name, info)


def stage_restart(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """A warm restart of the base: continue from its EMA weights with a fresh optimiser and a new
    cosine schedule at half the first peak rate. On a GPU study (docs/archive/study/recipe_study.py) the
    7,840-step base, which ignored position words (x0 moved 0.014 by left/right), learnt them
    within 2,000 restarted steps (position 36% -> 99% on 200 prompts)."""
    _continue_base("restart", budgets.restart_s, RESTART_LR, 100, budgets.n_train, budgets.probe_n, **RESTART_NOISE)


def _restart_probe() -> float | None:
    path = work_dir() / "base" / "restart.json"
    return json.loads(path.read_text()).get("position_probe") if path.exists() else None


def stage_restart2(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """A second warm restart at the restart's rate, with :data:`.noise.RESTART2_NOISE` (the position
    share kept, the SNR floor back to 0.3 so that shape suffers less). On the CPU, with the default
    budgets, the first restart left position words half learnt (60%, still rising) and a second
    one of 900 s took them to 99% at the same shape (docs/archive/study/README.md, continue_pilot.py). Its
    default is 720 s, and the base's 1,350 s (was 2,000) keep `all` within 2 hours with `sharpen`.
    Skipped when the first restart's position probe reached :data:`POSITION_LEARNT`: sharpen then
    gets its time."""
    probe, done = _restart_probe(), work_dir() / "base" / "restart2.json"
    if probe is not None and probe >= POSITION_LEARNT and not done.exists():
        log(f"restart2: skipped, position probe {probe:.1%} after restart; its {budgets.restart2_s:.0f} s go to sharpen")
        done.write_text(json.dumps(dict(skipped=True, position_probe_after_restart=probe)))
        record("restart2", dict(skipped=True, position_probe_after_restart=probe))
    _continue_base("restart2", budgets.restart2_s, RESTART_LR, 100, budgets.n_train, **RESTART2_NOISE)


def stage_sharpen(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """A third warm restart, with the base's plain noise (no SNR floor). The restarts' floor weighs
    the noisiest timesteps so much that, while position words are learnt, shape stands still
    (76-78.5% after the first restart whatever its noise; squares come out with round corners).
    Once position is learnt, the plain noise gives the quiet timesteps their share back: on the CPU,
    from the second restart's weights, shape went 77.1 -> 92.5% (squares 35 -> 83%), position
    99 -> 96.5% in 900 s (docs/archive/study/README.md, continue_pilot.py ``base``; guidance 5, 200 prompts).
    A skipped restart2 adds its time; :func:`stage_sharpen2` follows."""
    _continue_base("sharpen", sharpen_seconds(budgets), RESTART_LR, 50, budgets.n_train, **BASE_NOISE)


def stage_sharpen2(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Sharpen again from its EMA weights with a fresh schedule: a single 1,470-s sharpen stopped at
    shape 86.2% (squares 36 of 67, their median box fill 0.902 against the analyser's 0.9), and
    360 s more as a second restart took those weights to 90.4% (squares 47;
    docs/archive/study/outline_sharpen_pilot.py, plain arm). Its 360 s come out of sharpen's 750; the first
    one-piece run with it (1,110 + 360 s) scored shape 90.8%, squares 45 of 67."""
    _continue_base("sharpen2", budgets.sharpen2_s, RESTART_LR, 50, budgets.n_train, **BASE_NOISE)


def sharpen_seconds(budgets: Budgets = DEFAULT_BUDGETS) -> float:
    """Sharpen's budget: its own, plus restart2's when that was skipped."""
    restart2 = work_dir() / "base" / "restart2.json"
    skipped = restart2.exists() and json.loads(restart2.read_text()).get("skipped", False)
    return budgets.sharpen_s + (budgets.restart2_s if skipped else 0)


def stage_polish(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Sharpen the restarted base's shapes: continue at a lower rate with :data:`POLISH_NOISE`.
    The layout-deciding half (t >= 500) keeps the pyramid noise that taught position; squares
    had come out with soft corners that the analyser reads as circles."""
    _continue_base("polish", budgets.polish_s, POLISH_LR, 50, budgets.n_train, **POLISH_NOISE)
