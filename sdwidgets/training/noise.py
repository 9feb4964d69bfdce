"""How the recipe and :func:`~sdwidgets.training.lora.train_lora` noise their training samples:
which timesteps, what noise, and how the epsilon loss is weighted.

Under Stable Diffusion's schedule (terminal SNR 0.005) this world's flat blobs stay visible in
the low frequencies of x_t almost to t=1000, so a model trained the plain way reads the layout
off the noise and learns little from position words. The pieces below counter that; each is
recorded on the model card with the base step where it took effect.
"""
from __future__ import annotations

import torch

SNR_FLOOR = 0.05  # from base step 3,191 on (see eps_loss); 0 before
PYRAMID_DISCOUNT = 0.8  # from base step 3,651 on (see pyramid_noise); white noise before
BLIND_FROM = 900  # base_loss's default (see blind_top); the shipped weights predate it

# How the recipe's base and restart noise their samples (keywords of shapes.base_loss); the shipped
# weights predate both. Shape first, then position. The base is plain: white noise, uniform
# timesteps, no SNR floor (only the top timesteps blind), which on the 2-core CPU reached shape 81%
# in 2,502 steps where the position-first noise (floor 0.3, pyramid 0.9, 70% of t >= 500) left
# 46.7% after base and restart (docs/archive/study/shape_first_pilot.py). The restart then weighs the blind top
# timesteps six times more (floor 0.3 instead of 0.05): on a GPU every run with it learnt position
# words within 1,800 steps and 5 of 6 without it stayed at 24-40% (docs/archive/study/position_study.py); on the
# CPU after the plain base it took position 23% -> 60% (x0 left/right 0.009 -> 0.24), shape 81% -> 78.5%.
# Once position is learnt, the last restarts (stages sharpen, sharpen2) train with BASE_NOISE again: without
# the floor, squares get their corners back (shape 77 -> 92.5%, position 99 -> 94%, docs/archive/study/README.md).
BASE_NOISE = dict(discount=0.0, high_noise_share=0.0, snr_floor=0.0, blind_from=BLIND_FROM)
# Since 2026-11-27 the restart pushes position harder: floor 1.0 instead of 0.3, and 75% of each
# batch drawn among scenes placed by a position word, captioned with it (shapes.training_batch).
# From the second from-scratch run's base (position at chance), 600 s of restart moved x0 by
# left/right 0.007 as before (628 steps), 0.013 with the position share (624), 0.018 with floor 1.0
# (460 steps; fg fell 95 -> 81% meanwhile, which sharpen's plain noise is there to restore).
RESTART_NOISE = dict(discount=PYRAMID_DISCOUNT, high_noise_share=0.5, snr_floor=1.0, blind_from=BLIND_FROM,
                     position_share=0.75)
# The second restart (stage restart2) keeps the position share but goes back to floor 0.3: in the
# third from-scratch run, floor 1.0 in both restarts took position to 98.8% but left shape at 68.8%
# after sharpen (the floor starves the quiet timesteps where corners are made); floor 0.3 restarts
# held shape at 76-78.5% in the earlier runs.
RESTART2_NOISE = RESTART_NOISE | dict(snr_floor=0.3)


def draw_timesteps(n: int, high_noise_share: float = 0.0, num_train_timesteps: int = 1000,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` timesteps, uniform, except that the first ``round(high_noise_share * n)`` come from
    the noisier half, where layout, colour and position are decided (the quiet half, fine detail,
    is learnt quickly). The base used 0.5 from step 2,511 on, 0 before."""
    t = torch.randint(0, num_train_timesteps, (n,), generator=generator)
    k = round(high_noise_share * n)
    t[:k] = torch.randint(num_train_timesteps // 2, num_train_timesteps, (k,), generator=generator)
    return t


def pyramid_noise(like: torch.Tensor, discount: float = PYRAMID_DISCOUNT) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise, as in kohya's trainers: white noise plus
    ``discount**i`` times upsampled white noise at every halving of the resolution down to 1x1,
    rescaled to unit variance per sample. The coarse parts hide a blob's layout in x_t."""
    import torch.nn.functional as F

    b, c, h, w = like.shape
    noise = torch.randn_like(like)
    level = 1
    while h >> level >= 1 and w >> level >= 1:
        coarse = torch.randn(b, c, h >> level, w >> level, device=like.device)
        noise += discount ** level * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        level += 1
    return noise / noise.std(dim=(1, 2, 3), keepdim=True)


def whiten_quiet(noise: torch.Tensor, t: torch.Tensor, white_below: int) -> torch.Tensor:
    """``noise`` with the samples at timesteps below ``white_below`` redrawn as white noise: where
    the image is already visible, fine detail (edges, corners) is what is left to learn."""
    quiet = t < white_below
    out = noise.clone()
    out[quiet] = torch.randn_like(noise[quiet])
    return out


def blind_top(z0: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sched,
              blind_from: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, epsilon target)`` with the samples at timesteps >= ``blind_from`` made "blind": x_t
    is pure white noise, as the sampler's first step sees it (SD's schedule still leaks the layout
    at t=999 in training), and the target is the epsilon that maps it back to ``z0``. There the
    model can only learn the layout that the prompt implies, so position words get a gradient."""
    blind = (t >= blind_from).view(-1, 1, 1, 1)
    ab = sched.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1)
    pure = torch.randn_like(x_t)
    eps = (pure - ab.sqrt() * z0) / (1 - ab).sqrt()
    return torch.where(blind, pure, x_t), torch.where(blind, eps, noise)


def snr_weights(sched, t: torch.Tensor, gamma: float = 5.0, floor: float = 0.0) -> torch.Tensor:
    """Epsilon-loss weights: min-SNR(gamma) caps the quiet timesteps; ``floor`` > 0 keeps the
    x0-space weight of the noisiest ones at ``floor`` instead of letting it vanish with the SNR."""
    ac = sched.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, min=floor, max=gamma) / snr


def eps_loss(pred: torch.Tensor, noise: torch.Tensor, sched, t: torch.Tensor,
             floor: float = SNR_FLOOR) -> torch.Tensor:
    """The recipe's loss: per-sample epsilon MSE weighted by :func:`snr_weights` (floor 0.05)."""
    return (((pred - noise) ** 2).mean(dim=(1, 2, 3)) * snr_weights(sched, t, floor=floor)).mean()
