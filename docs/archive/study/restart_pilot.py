"""CPU pilot (2026-11-26): which restart noise teaches position words without costing shape?

    SDW_TRAIN_WORK=<work dir with latents.pt and vae/> restart_pilot.py SRC OUT VARIANT STEPS1 STEPS2 N

From a plain base (SRC: a folder with unet/, text_encoder/, tokenizer/), run the recipe's two warm
restarts (each: the EMA weights so far, a fresh AdamW at 3e-4, warmup 100, cosine, EMA) for a fixed
number of steps each (so that two pilots can share the 2 cores and still match the recipe's step
counts), with one of the noises below, and score N grammar prompts after each restart.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from sdwidgets.training import noise, shapes, world
from sdwidgets.training.architecture import default_scheduler, training_scheduler
from sdwidgets.training.evaluate import eval_prompts, generate, grammar_hits
from sdwidgets.training.workspace import lr_at, optimise

src, out, variant = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
steps1, steps2, n_eval = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(int(os.environ.get("SDW_THREADS", 1)))

# noise keywords of shapes.base_loss, plus floor_blind_only: the SNR floor only on the blind top
# timesteps (where the prompt is all the model can go by), min-SNR alone everywhere else
VARIANTS = {
    "recipe": dict(noise.RESTART_NOISE),
    "white": dict(noise.RESTART_NOISE, discount=0.0),
    "blindfloor": dict(discount=0.0, high_noise_share=0.0, snr_floor=0.3, blind_from=noise.BLIND_FROM,
                       floor_blind_only=True),
}
kw = dict(VARIANTS[variant])
floor_blind_only = kw.pop("floor_blind_only", False)


def loss_fn(unet, te, tok, sched, scenes, lat, step):
    if not floor_blind_only:
        return shapes.base_loss(unet, te, tok, sched, scenes, lat, step, shapes.BASE_BATCH, **kw)
    # shapes.base_loss with the floor applied to t >= blind_from only
    rng = np.random.default_rng(shapes.SEED * 7 + step)
    idx = rng.integers(len(scenes), size=shapes.BASE_BATCH)
    caps = [shapes.redraw_caption(scenes[i], rng) for i in idx]
    z0 = lat[torch.from_numpy(idx)]
    eps = torch.randn_like(z0)
    t = noise.draw_timesteps(len(idx), high_noise_share=kw["high_noise_share"])
    x_t, target = noise.blind_top(z0, sched.add_noise(z0, eps, t), eps, t, sched, kw["blind_from"])
    pred = unet(x_t, t, shapes.encode_prompts(tok, te, caps)).sample
    w = torch.where(t >= kw["blind_from"], noise.snr_weights(sched, t, floor=kw["snr_floor"]), noise.snr_weights(sched, t))
    return (((pred - target) ** 2).mean(dim=(1, 2, 3)) * w).mean()


vae = AutoencoderKL.from_pretrained(os.environ["SDW_TRAIN_WORK"] + "/vae").eval()
tok = CLIPTokenizer.from_pretrained(f"{src}/tokenizer")
unet = UNet2DConditionModel.from_pretrained(f"{src}/unet")
te = CLIPTextModel.from_pretrained(f"{src}/text_encoder")
scenes, lat = shapes.world_latents()
sched = training_scheduler()


def score(tag: str) -> dict:
    pipe = StableDiffusionPipeline(vae=vae, unet=unet.eval(), text_encoder=te.eval(), tokenizer=tok,
                                   scheduler=default_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    sc = eval_prompts(n_eval)
    with torch.no_grad():
        imgs = generate(pipe, [world.caption_of(s) for s in sc], list(range(n_eval)), guidance_scale=7.5)
    h = {k: round(float(np.mean(v)), 3) for k, v in grammar_hits(sc, imgs).items()}
    print(variant, tag, h, flush=True)
    unet.train(), te.train()
    return h


def restart(n_steps: int) -> float:
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=shapes.RESTART_LR, weight_decay=0.01)
    ema_u, ema_t = shapes.EMA(unet), shapes.EMA(te)
    unet.train(), te.train()
    run = None
    for step in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, n_steps, shapes.RESTART_LR, warmup=100)
        loss = optimise(opt, loss_fn(unet, te, tok, sched, scenes, lat, step), params)
        ema_u.update(unet, step), ema_t.update(te, step)
        run = loss if run is None else 0.98 * run + 0.02 * loss
        if step % 100 == 0:
            print(variant, step, round(run, 4), flush=True)
    unet.load_state_dict(ema_u.shadow), te.load_state_dict(ema_t.shadow)
    return run


res = {"src": src, "variant": variant, "noise": VARIANTS[variant], "steps": [steps1, steps2]}
res["loss1"] = restart(steps1)
res["after_restart"] = score(f"after restart ({steps1} steps)")
res["loss2"] = restart(steps2)
res["after_restart2"] = score(f"after restart2 ({steps2} steps)")
out.mkdir(parents=True, exist_ok=True)
unet.save_pretrained(out / variant / "unet"), te.save_pretrained(out / variant / "text_encoder")
with open(out / "results.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
