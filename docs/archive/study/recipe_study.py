"""Recipe study for the embedded model's base (text encoder + UNet), run on a lent GPU.

Each variant trains the base the recipe's way (same data, captions, EMA, cosine schedule) for a
fixed number of steps and scores the EMA weights every ``--eval-every`` steps on the grammar
prompts (fg / bg / shape / position / size), plus how far the position words move the x0
prediction at t=999. Usage:

    python study/recipe_study.py prep --out DIR             # encode the world once
    python study/recipe_study.py train VARIANT --out DIR     # one variant, JSON lines to DIR
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from sdwidgets.training import architecture as A
from sdwidgets.training import world
from sdwidgets.training.evaluate import eval_prompts, generate, grammar_hits
from sdwidgets.training.shapes import EMA, base_loss, encode_prompts
from sdwidgets.training.workspace import SEED, lr_at, optimise

ASSET = Path(__file__).resolve().parents[1] / "sdwidgets" / "assets" / "shapes"
NOW = dict(ch=(48, 96, 128), discount=0.8, share=0.5, floor=0.05)
VARIANTS = {
    "now": NOW,
    "white": NOW | dict(discount=0.0, share=0.0, floor=0.0),
    "cont": NOW | dict(init="asset", lr=3e-4, warmup=100),
    "deep": NOW | dict(ch=(32, 64, 96, 128)),
    "strong": NOW | dict(discount=0.9, share=0.7),
    "deep_strong": NOW | dict(ch=(32, 64, 96, 128), discount=0.9, share=0.7),
}
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def prep(out: Path, n: int) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(ASSET / "vae", torch_dtype=torch.float32).to(DEV).eval()
    rng = np.random.default_rng(SEED + 1)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    lat = []
    with torch.no_grad():
        for i in range(0, n, 1000):
            x = world.to_tensor(np.stack([world.render(s) for s in scenes[i:i + 1000]])).to(DEV)
            lat.append((vae.encode(x).latent_dist.mean * vae.config.scaling_factor).cpu())
    torch.save(dict(scenes=[s.__dict__ for s in scenes], latents=torch.cat(lat)), out / "latents.pt")
    print("prep", n, "latents", flush=True)


def build(v: dict, tok):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    if v.get("init") == "asset":
        unet = UNet2DConditionModel.from_pretrained(ASSET / "unet", torch_dtype=torch.float32)
        te = CLIPTextModel.from_pretrained(ASSET / "text_encoder", torch_dtype=torch.float32)
        return unet, te
    A.UNET_CHANNELS = tuple(v["ch"])
    torch.manual_seed(SEED)
    return UNet2DConditionModel(**A.unet_config(4)), CLIPTextModel(A.text_config(tok))


@torch.no_grad()
def score(unet, te, tok, vae, n: int) -> dict:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=A.default_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scenes = eval_prompts(n)
    prompts = [world.caption_of(sc) for sc in scenes]
    imgs = generate(pipe, prompts, list(range(n)), batch=100, guidance_scale=7.5)
    hits = grammar_hits(scenes, imgs)
    res = {k: round(float(np.mean(h)), 4) for k, h in hits.items()}
    # how far 'left' vs 'right' moves the x0 prediction at t=999 (mean over 16 noises), vs colour
    ab = A.training_scheduler().alphas_cumprod[999].item()
    noise = torch.randn(16, 4, 16, 16, generator=torch.Generator().manual_seed(0)).to(DEV)
    x0 = []
    for p in ("a large red circle on the left on a blue background", "a large red circle on the right on a blue background",
              "a large green circle on the left on a blue background"):
        eps = unet(noise, torch.full((16,), 999, device=DEV), encode_prompts(tok, te, [p] * 16).to(DEV)).sample
        x0.append(((noise - (1 - ab) ** 0.5 * eps) / ab ** 0.5).mean(0))
    res["x0_left_right"] = round((x0[0] - x0[1]).abs().mean().item(), 4)
    res["x0_red_green"] = round((x0[0] - x0[2]).abs().mean().item(), 4)
    return res


def train(name: str, out: Path, steps: int, every: int, n_eval: int, wall: float) -> None:
    import copy

    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    v = VARIANTS[name]
    tok = CLIPTokenizer.from_pretrained(ASSET / "tokenizer")
    d = torch.load(out / "latents.pt", weights_only=False)
    scenes, lat = [world.Scene(**s) for s in d["scenes"]], d["latents"].to(DEV)
    vae = AutoencoderKL.from_pretrained(ASSET / "vae", torch_dtype=torch.float32).to(DEV).eval()
    unet, te = build(v, tok)
    unet, te = unet.to(DEV), te.to(DEV)
    params = list(unet.parameters()) + list(te.parameters())
    base_lr, warmup = v.get("lr", 6e-4), v.get("warmup", 300)
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=0.01)
    ema_u, ema_t = EMA(unet), EMA(te)
    e_unet, e_te = copy.deepcopy(unet).eval(), copy.deepcopy(te).eval()
    sched = A.training_scheduler()
    B, t0, run = 64, time.time(), None
    log = open(Path(os.environ.get("STUDY_LOG_DIR", out)) / f"{name}.jsonl", "a")
    info = dict(variant=name, cfg={k: list(x) if isinstance(x, tuple) else x for k, x in v.items()},
                unet_params=sum(p.numel() for p in unet.parameters()), device=DEV)
    log.write(json.dumps(info) + "\n")
    if v.get("init"):
        log.write(json.dumps(score(unet.eval(), te.eval(), tok, vae, n_eval) | dict(step=0)) + "\n")
        unet.train(), te.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, base_lr, warmup=warmup)
        loss = base_loss(unet, te, tok, sched, scenes, lat, step, B, discount=v["discount"],
                         high_noise_share=v["share"], snr_floor=v["floor"])
        loss = optimise(opt, loss, params)
        ema_u.update(unet, step)
        ema_t.update(te, step)
        run = loss if run is None else 0.98 * run + 0.02 * loss
        last = step + 1 == steps or time.time() - t0 > wall
        if (step + 1) % every == 0 or last:
            e_unet.load_state_dict(ema_u.shadow)
            e_te.load_state_dict(ema_t.shadow)
            ts = time.time()
            res = score(e_unet, e_te, tok, vae, n_eval)
            res |= dict(step=step + 1, loss=round(run, 5), train_s=round(ts - t0), eval_s=round(time.time() - ts, 1))
            log.write(json.dumps(res) + "\n")
            log.flush()
            print(name, json.dumps(res), flush=True)
            t0 += time.time() - ts  # the wall limit counts training only
        if last:
            break


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["prep", "train"])
    ap.add_argument("variant", nargs="?")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=24000)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--wall", type=float, default=420)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("STUDY_THREADS", 2)))
    if a.what == "prep":
        prep(a.out, a.n)
    else:
        train(a.variant, a.out, a.steps, a.every, a.n_eval, a.wall)


if __name__ == "__main__":
    main()
