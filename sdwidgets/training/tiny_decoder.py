"""Recipe stage ``tiny-decoder``: a TAESD-class preview decoder for the embedded model.

A diffusers ``AutoencoderTiny`` is distilled from the shipped VAE on the latents previews
really show: the x0 predictions of real runs of the shipped model at every step (several
guidance scales, Euler and Euler a), plus clean encodings of the world's images. (Noisy latents
are left out: their frames come from the linear map, see :mod:`sdwidgets.previewers`.) The target is always the exact VAE decode of the same latent, so the preview matches
``full`` rather than the final image by luck. Saved to ``<model folder>/vae-tiny`` (loadable with
``AutoencoderTiny.from_pretrained``); ``sdwidgets.previewers`` picks it up as the ``tiny`` method.

It reads only the shipped folder, so it can be re-run alone after any ``export``:
``python -m sdwidgets.training.shapes tiny-decoder``.
"""
from __future__ import annotations

import json
import time

import numpy as np

from . import world
from .workspace import (DEFAULT_BUDGETS, SEED, Budgets, asset_dir, load_asset_pipe, log, optimise, record, recorded,
                        train_for, work_dir)

FOLDER = "vae-tiny"
# Small on purpose: the preview must cost a few percent of a denoising step of a 3 M-parameter UNet.
# Channels are constant (DecoderTiny's layout); 3 levels = latent factor 4, as the shapes VAE.
CHANNELS = 16
DECODER_BLOCKS = (1, 1, 0)
N_PROMPTS = 128
N_CLEAN = 512
GUIDANCE = (1.0, 3.0, 5.0, 7.5)


def tiny_config(vae) -> dict:
    levels = len(vae.config.block_out_channels)
    return dict(latent_channels=vae.config.latent_channels, decoder_block_out_channels=(CHANNELS,) * levels,
                num_decoder_blocks=DECODER_BLOCKS, encoder_block_out_channels=(CHANNELS,) * levels,
                num_encoder_blocks=(1,) * levels,
                scaling_factor=1.0, shift_factor=0.0)   # it reads model-space latents, like madebyollin/taesd


def denoiser_latents(pipe, n_prompts: int = N_PROMPTS, seed: int = SEED + 24, batch: int = 16):
    """x0 predictions at every step of real runs, [N, C, h, w] on the CPU."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    rng = np.random.default_rng(seed)
    captions = [world.caption_of(world.sample_scene(rng)) for _ in range(n_prompts)]
    found = []
    for k in range(0, n_prompts, batch):
        kind = EulerDiscreteScheduler if (k // batch) % 2 == 0 else EulerAncestralDiscreteScheduler
        pipe.scheduler = kind.from_config(pipe.scheduler.config)
        step = pipe.scheduler.step

        def capture(*args, _step=step, **kwargs):
            out = _step(*args, **kwargs)
            x0 = out[1] if isinstance(out, tuple) else out.pred_original_sample
            found.append(x0.detach().float().cpu())
            return out

        pipe.scheduler.step = capture
        pipe(captions[k:k + batch], num_inference_steps=20, guidance_scale=GUIDANCE[(k // batch // 2) % len(GUIDANCE)],
             generator=torch.Generator().manual_seed(seed + k), output_type="latent")
    return torch.cat(found)


def training_set(pipe):
    """(latents, exact decodes in [-1, 1]) for the distillation."""
    import torch
    from PIL import Image

    from ..latents import decode, encode

    t0 = time.time()
    rng = np.random.default_rng(SEED + 25)
    clean = encode(pipe.vae, [Image.fromarray(world.render_broad(rng)) for _ in range(N_CLEAN)])
    z = torch.cat([denoiser_latents(pipe), clean])
    x = torch.cat([decode(pipe.vae, part) for part in z.split(64)])
    log(f"tiny-decoder: {len(z)} latents ({len(clean)} clean) and their decodes in {time.time() - t0:.0f} s")
    return z, x


def stage_tiny_decoder(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Distil ``vae-tiny`` from the shipped folder's VAE for ``budgets.tiny_decoder_s``."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(SEED + 26)
    pipe = load_asset_pipe()
    pipe.vae.requires_grad_(False)
    z, x = training_set(pipe)
    images = x[-N_CLEAN:]
    hold = torch.randperm(len(z))[: len(z) // 16]                  # held out, for the recorded score
    train = torch.ones(len(z), dtype=torch.bool)
    train[hold] = False
    zt, xt = z[train], x[train]
    tiny = AutoencoderTiny(**tiny_config(pipe.vae))
    opt = torch.optim.AdamW(tiny.parameters(), lr=2e-3, weight_decay=0.0)
    rng = torch.Generator().manual_seed(SEED + 27)
    state = {"step": 0}

    def step_fn(_step: int) -> float:
        idx = torch.randint(len(zt), (32,), generator=rng)
        y = tiny.decode(zt[idx]).sample
        loss = (y - xt[idx]).abs().mean() + ((y - xt[idx]) ** 2).mean()
        # the encoder too (encode, then previews of img2img inputs), on clean images only
        j = torch.randint(len(images), (16,), generator=rng)
        loss = loss + 0.1 * (tiny.encode(images[j]).latents - z[-N_CLEAN:][j]).abs().mean()
        return optimise(opt, loss, list(tiny.parameters()))

    out, asset = work_dir() / FOLDER, asset_dir()
    train_for("tiny-decoder", budgets.tiny_decoder_s, state, opt, 2e-3, 100, step_fn,
              lambda: tiny.save_pretrained(out), save_every_s=60)
    with torch.no_grad():
        err = float((tiny.decode(z[hold]).sample.clamp(-1, 1) - x[hold]).abs().mean())
    tiny.to(torch.float16).save_pretrained(asset / FOLDER)     # fp16 like the other shipped weights
    size = sum(p.stat().st_size for p in (asset / FOLDER).iterdir())
    record("tiny_decoder", {"heldout_mae": round(err, 4), "steps": state["step"], "bytes": size,
                            "params": sum(p.numel() for p in tiny.decoder.parameters()),
                            "channels": CHANNELS, "decoder_blocks": list(DECODER_BLOCKS), "latents": len(z),
                            "seconds": budgets.tiny_decoder_s})
    sizes = recorded().get("weights_bytes", {})           # the model card's file list (export wrote the rest)
    sizes[f"{FOLDER}/diffusion_pytorch_model.safetensors"] = (asset / FOLDER / "diffusion_pytorch_model.safetensors").stat().st_size
    # "total" stays the model's (export): the preview decoder is outside its 20 MB budget
    record("weights_bytes", sizes)
    log(f"tiny-decoder: held-out MAE {err:.4f} (pixels in [-1, 1]), {size / 1e3:.0f} kB in {asset / FOLDER}")
    (work_dir() / FOLDER / "losses.json").write_text(json.dumps(state.get("losses", [])))
