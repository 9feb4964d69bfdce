"""Does weighting the shape's outline in the UNet's loss give squares their corners?

    SDW_TRAIN_WORK=<run's work dir (latents.pt)> python study/outline_sharpen_pilot.py SRC OUT SECONDS plain|outline [WEIGHT]

Continues SRC (a folder with unet/, text_encoder/, tokenizer/: a run's base after `sharpen`) for
SECONDS with sharpen's settings (noise.BASE_NOISE, lr 3e-4, warmup 50, EMA). ``outline`` multiplies
the per-latent-pixel epsilon error by WEIGHT (default 4) where the shape's outline (2 px either
side of its edge, max-pooled to the latent grid) falls; ``plain`` is the control. Writes
OUT/<variant>/{unet,text_encoder}; score them with shape_errors.py (SDW_WEIGHTS=OUT/<variant>).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sdwidgets.training import shapes, world
from sdwidgets.training.noise import BASE_NOISE, blind_top, snr_weights

src, out, seconds, variant = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
weight = float(sys.argv[5]) if len(sys.argv) > 5 else 4.0
assert variant in ("plain", "outline"), "variant: plain or outline"
scenes, lat = shapes.world_latents()


def outline_maps(size: int) -> torch.Tensor:
    """1 where a scene's shape outline (a 5-px band on its edge) touches a latent pixel, else 0."""
    kernel = np.ones((5, 5), np.uint8)
    maps = []
    for sc in scenes:
        m = world.shape_mask(sc).astype(np.uint8)
        maps.append(cv2.dilate(m, kernel) - cv2.erode(m, kernel))
    band = torch.from_numpy(np.stack(maps)).float()[:, None]
    return F.adaptive_max_pool2d(band, size)


pixel_weight = 1 + (weight - 1) * outline_maps(lat.shape[-1]) if variant == "outline" else None


def weighted_loss(unet, te, tok, sched, scenes, lat, step, batch=64, *, discount, high_noise_share,
                  snr_floor, white_below=0, blind_from, position_share=0.0):
    """shapes.base_loss with white noise, uniform t and blind top (BASE_NOISE), the error weighted per pixel."""
    assert not discount and not high_noise_share and not white_below
    rng = np.random.default_rng(shapes.SEED * 7 + step)
    idx, caps = shapes.training_batch(scenes, rng, batch, position_share)
    z0 = lat[torch.from_numpy(idx)]
    noise = torch.randn_like(z0)
    t = torch.randint(0, 1000, (batch,))
    x_t, target = blind_top(z0, sched.add_noise(z0, noise, t), noise, t, sched, blind_from)
    pred = unet(x_t, t, shapes.encode_prompts(tok, te, caps)).sample
    err = (pred - target) ** 2
    if pixel_weight is not None:
        w = pixel_weight[torch.from_numpy(idx)]
        err = err * w / w.mean(dim=(1, 2, 3), keepdim=True)  # same total weight per sample: only where it goes changes
    return (err.mean(dim=(1, 2, 3)) * snr_weights(sched, t, floor=snr_floor)).mean()


shapes.base_loss = weighted_loss
from diffusers import UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

tok = CLIPTokenizer.from_pretrained(src / "tokenizer")
unet = UNet2DConditionModel.from_pretrained(src / "unet")
te = CLIPTextModel.from_pretrained(src / "text_encoder")
out.mkdir(parents=True, exist_ok=True)
info = shapes._train_base(unet, te, tok, out / f"{variant}.pt", seconds, 3e-4, 50, **BASE_NOISE)
unet.save_pretrained(out / variant / "unet")
te.save_pretrained(out / variant / "text_encoder")
print({"variant": variant, "weight": weight if pixel_weight is not None else 1, "steps": info["steps"],
       "final_loss": info["final_loss"]})
