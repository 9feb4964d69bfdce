"""The ``controlnet`` stage: a canny ControlNet trained on the shipped base (frozen), on the
captioned world's edges."""
from __future__ import annotations

import time

import numpy as np
import torch

from . import world
from .architecture import training_scheduler
from .denoiser import world_latents
from .losses import encode_prompts, redraw_caption
from .noise import draw_timesteps, eps_loss, pyramid_noise
from .workspace import (DEFAULT_BUDGETS, SEED, Budgets, load_asset_pipe, log, optimise, record, resume, saver, train_for,
                        work_dir)


def stage_controlnet(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Train a canny ControlNet on the shipped folder's base (frozen) for ``budgets.controlnet_s``."""
    out = work_dir() / "controlnet"
    if (out / "config.json").exists():
        log("controlnet: exists, skipped")
        return
    from diffusers import ControlNetModel

    t_stage = time.time()
    pipe = load_asset_pipe()
    unet, te, tok = pipe.unet.requires_grad_(False), pipe.text_encoder.requires_grad_(False), pipe.tokenizer
    factor = pipe.vae_scale_factor
    chans = (16, 32, 48) if factor == 4 else (16, 32, 48, 64)
    torch.manual_seed(SEED + 3)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=chans)
    scenes, lat = world_latents(budgets.n_train)
    opt = torch.optim.AdamW(cn.parameters(), lr=1e-3, weight_decay=0.01)
    sched = training_scheduler()
    ckpt = work_dir() / "controlnet.pt"
    state = resume(ckpt, {"cn": cn}, opt)
    B = 24

    def step_fn(step: int) -> float:
        rng = np.random.default_rng(SEED * 11 + step)
        idx = rng.integers(len(scenes), size=B)
        caps = [redraw_caption(scenes[i], rng) for i in idx]
        cond = torch.from_numpy(np.stack([world.edges(world.render(scenes[i])) for i in idx])).permute(0, 3, 1, 2).float() / 255
        z0 = lat[torch.from_numpy(idx)]
        noise = pyramid_noise(z0)
        t = draw_timesteps(B, high_noise_share=0.5)
        zt = sched.add_noise(z0, noise, t)
        with torch.no_grad():
            enc = encode_prompts(tok, te, caps)
        down, mid = cn(zt, t, enc, controlnet_cond=cond, return_dict=False)
        pred = unet(zt, t, enc, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        loss = eps_loss(pred, noise, sched, t)
        return optimise(opt, loss, cn.parameters())

    run_loss = train_for("controlnet", budgets.controlnet_s, state, opt, 1e-3, 50, step_fn,
                         saver(ckpt, {"cn": cn}, opt, state), curve_every=25)
    cn.save_pretrained(out)
    record("controlnet", dict(steps=state["step"], batch=B, train_s=round(state["elapsed"]),
                              stage_wall_s=round(time.time() - t_stage), final_loss=run_loss,
                              params=sum(p.numel() for p in cn.parameters()),
                              loss_curve_every_25=state["losses"]))
