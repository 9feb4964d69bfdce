"""Pixels <-> model-space latents through a pipeline's VAE.

Model space is what the denoiser sees: (posterior mean - shift_factor) * scaling_factor,
as diffusers' pipelines use it (shift_factor is 0 except for SD3/Flux).
"""
from __future__ import annotations


def pixels(images, like):
    """PIL images (same size) -> tensor in [-1, 1], shape [B, 3, H, W], on `like`'s device/dtype."""
    import numpy as np
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).to(like)


def encode(vae, images):
    """PIL images -> model-space latents (the posterior mean)."""
    import torch

    x = pixels(images, next(vae.parameters()))
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    return (z - _shift(vae)) * vae.config.scaling_factor


def decode(vae, latents):
    """Model-space latents -> tensor in [-1, 1] (clamped)."""
    import torch

    with torch.no_grad():
        x = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + _shift(vae)).sample
    return x.float().clamp(-1, 1)


def to_images(x) -> list:
    """Tensor in [-1, 1], [B, 3, H, W] -> PIL images."""
    import torch
    from PIL import Image

    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def _shift(vae) -> float:
    return vae.config.get("shift_factor") or 0.0
