"""The forward (noising) process, made visible: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

Uses the Session's loaded pipeline (its VAE and its scheduler's alphas_cumprod); with session.py the
only module that touches those components. Nothing here runs the denoiser.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Noised:
    t: int
    alpha_bar: float
    latent: object          # PIL: x_t in latent space, decoded by the VAE
    pixel: object           # PIL: the same formula applied to the pixels
    latent_preview: object  # PIL: x_t latent channels shown directly (first three, normalised)


def alpha_bars(session, model: str | None = None):
    """The scheduler's alpha_bar_t (alphas_cumprod) for t = 0 .. T-1, as a numpy array."""
    scheduler = session.pipeline(model).scheduler
    values = getattr(scheduler, "alphas_cumprod", None)
    if values is None:
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod (not a DDPM-style schedule)")
    return values.detach().cpu().double().numpy()


def encode(session, image, model: str | None = None):
    """(x_0 in the model's latent space, x_0 in pixel space) for a PIL image at the model's size."""
    from . import latents

    vae = session.pipeline(model).vae
    image = image.convert("RGB").resize(session.native_size(model))
    return latents.encode(vae, [image]), latents.pixels([image], next(vae.parameters()))


def forward_noise(session, image, t: int, seed: int = 0, model: str | None = None, x0=None) -> Noised:
    """Noise `image` to timestep t in latent space (then decode) and in pixel space, same seed.

    `x0` is a cached (latents, pixels) pair from `encode()` so a slider only pays for the decode.
    """
    import torch

    from . import latents

    bars = alpha_bars(session, model)
    t = int(min(max(t, 0), len(bars) - 1))
    ab = float(bars[t])
    z0, p0 = x0 if x0 is not None else encode(session, image, model)
    g = torch.Generator("cpu").manual_seed(seed)
    eps_z = torch.randn(z0.shape, generator=g).to(z0)
    eps_p = torch.randn(p0.shape, generator=g).to(p0)
    zt = ab ** 0.5 * z0 + (1 - ab) ** 0.5 * eps_z
    pt = ab ** 0.5 * p0 + (1 - ab) ** 0.5 * eps_p
    decoded = latents.decode(session.pipeline(model).vae, zt)
    return Noised(t, ab, latents.to_images(decoded)[0], latents.to_images(pt)[0], _latent_pil(zt))


def curve_image(bars, t: int | None = None, size: tuple[int, int] = (256, 160)):
    """A small plot of alpha_bar_t (and 1 - alpha_bar_t) with a marker at t (PIL, no matplotlib)."""
    from PIL import Image, ImageDraw

    w, h = size
    pad = 14
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    n = len(bars)

    def xy(i, v):
        return pad + (w - 2 * pad) * i / max(1, n - 1), h - pad - (h - 2 * pad) * v

    draw.rectangle([pad, pad, w - pad, h - pad], outline=(200, 200, 200))
    step = max(1, n // 200)
    draw.line([xy(i, float(bars[i])) for i in range(0, n, step)] + [xy(n - 1, float(bars[-1]))],
              fill=(25, 90, 200), width=2)
    draw.line([xy(i, 1 - float(bars[i])) for i in range(0, n, step)], fill=(220, 120, 30), width=1)
    draw.text((pad + 2, pad + 1), "alpha_bar", fill=(25, 90, 200))
    draw.text((pad + 2, h - pad - 11), "1 - alpha_bar", fill=(220, 120, 30))
    if t is not None:
        x, y = xy(t, float(bars[t]))
        draw.line([(x, pad), (x, h - pad)], fill=(200, 0, 0))
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(200, 0, 0))
        draw.text((min(x + 3, w - 60), h - 12), f"t={t}", fill=(200, 0, 0))
    return img


def _latent_pil(z):
    from PIL import Image

    c = z[0, :3].float()
    lo, hi = c.amin(dim=(1, 2), keepdim=True), c.amax(dim=(1, 2), keepdim=True)
    arr = ((c - lo) / (hi - lo + 1e-8) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)
