"""The recipe's losses: the decoder's pixel losses (outline-weighted L1 + L2, palette
cross-entropy), and the base's noise-prediction loss with the batch it is computed on (stored
scenes with freshly drawn captions, noised as :mod:`.noise` says)."""
from __future__ import annotations

import numpy as np
import torch

from . import world
from .noise import BLIND_FROM, PYRAMID_DISCOUNT, SNR_FLOOR, blind_top, draw_timesteps, eps_loss, pyramid_noise, whiten_quiet
from .workspace import SEED


# ----------------------------------------------------------------------------- decoder (pixels)
def edge_band(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """(B,1,H,W) 1.0 where a pixel of ``x`` (B,3,H,W) lies within ``width`` px of a colour change."""
    import torch.nn.functional as F

    k = 2 * width + 1
    spread = F.max_pool2d(x, k, 1, width) + F.max_pool2d(-x, k, 1, width)  # local max - min
    return (spread.amax(1, keepdim=True) > 0.1).float()


def edge_weighted_loss(y: torch.Tensor, x: torch.Tensor, weight: float = 4.0,
                       palette: float = 0.0) -> torch.Tensor:
    """L1 + L2 of the decode ``y`` against the target ``x``, outline pixels weighted ``weight``;
    plus ``palette`` x the cross-entropy of each pixel's nearest palette colour (see palette_ce)."""
    w = 1 + (weight - 1) * edge_band(x)
    err = ((y - x).abs() + (y - x) ** 2).mean(1, keepdim=True)
    if palette:
        err = err + palette * palette_ce(y, x)
    return (w * err).sum() / w.sum()


PALETTE_TAU = 0.1


def palette_ce(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) cross-entropy of softmax(-distance^2 / tau) over the 8 palette colours of each
    pixel of ``y`` against the nearest palette colour of ``x`` (both in [-1, 1]). L1/L2 let an
    unsure decoder paint a corner in a blend that reads as a third colour or as the background;
    this makes it commit to one of the world's colours."""
    target = _palette_sq_distances(x).argmin(1)
    return torch.nn.functional.cross_entropy(-_palette_sq_distances(y) / PALETTE_TAU, target,
                                             reduction="none")[:, None]


def _palette_sq_distances(img: torch.Tensor) -> torch.Tensor:
    """(B,8,H,W) squared distance of each pixel of ``img`` (B,3,H,W, in [-1, 1]) to each palette colour."""
    pal = torch.from_numpy(world.PALETTE_ARRAY.astype(np.float32) / 127.5 - 1).to(img)  # (8,3)
    return ((img[:, None] - pal[None, :, :, None, None]) ** 2).sum(2)


# ----------------------------------------------------------------------------- base (noise prediction)
def redraw_caption(sc: world.Scene, rng: np.random.Generator, shape_word: str | None = None,
                   keep_position: bool = False) -> str:
    """A fresh caption for a stored scene: parts dropped anew each time it is seen
    (``keep_position``: never the position word, and never the whole caption)."""
    sc = world.Scene(**{**sc.__dict__})
    sc.words = dict(article=rng.random() < world.P_ARTICLE, colour=rng.random() < world.P_COLOUR,
                    shape=rng.random() < world.P_SHAPE, bg=rng.random() < world.P_BG,
                    empty=rng.random() < world.P_EMPTY)
    if sc.size_word and rng.random() < 0.15:
        sc.size_word = None
    if sc.position and rng.random() < 0.15 and not keep_position:
        sc.position = None
    if keep_position:
        sc.words["empty"] = False
    return world.caption_of(sc, shape_word)


def encode_prompts(tok, te, captions: list[str]) -> torch.Tensor:
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return te(ids.to(te.device))[0]


def training_batch(scenes: list[world.Scene], rng: np.random.Generator, batch: int,
                   position_share: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """Indices of a batch of stored scenes and their fresh captions. The first ``position_share``
    of the batch is drawn among the scenes placed by a position word and keeps that word: where
    position words are still to be learnt, more of the batch carries their signal."""
    idx = rng.integers(len(scenes), size=batch)
    k = round(position_share * batch)
    if k:
        placed = np.flatnonzero([sc.position is not None for sc in scenes])
        idx[:k] = placed[rng.integers(len(placed), size=k)]
    return idx, [redraw_caption(scenes[i], rng, keep_position=j < k) for j, i in enumerate(idx)]


def base_loss(unet, te, tok, sched, scenes: list[world.Scene], lat: torch.Tensor, step: int,
              batch: int = 64, *, discount: float = PYRAMID_DISCOUNT, high_noise_share: float = 0.5,
              snr_floor: float = SNR_FLOOR, white_below: int = 0, blind_from: int = BLIND_FROM,
              position_share: float = 0.0) -> torch.Tensor:
    """The base's training loss at ``step``: a seeded batch of stored scenes with freshly drawn
    captions, noised as :mod:`.noise` says (``discount=0``: white noise; samples at timesteps
    below ``white_below`` get white noise too; those at ``blind_from`` and above see pure noise,
    see :func:`.noise.blind_top`; 0 turns that off; ``position_share``: see :func:`training_batch`).
    On ``lat``'s device."""
    rng = np.random.default_rng(SEED * 7 + step)
    idx, caps = training_batch(scenes, rng, batch, position_share)
    z0 = lat[torch.from_numpy(idx).to(lat.device)]
    noise = pyramid_noise(z0, discount) if discount else torch.randn_like(z0)
    t = draw_timesteps(batch, high_noise_share=high_noise_share).to(lat.device)
    if white_below:
        noise = whiten_quiet(noise, t, white_below)
    x_t, target = sched.add_noise(z0, noise, t), noise
    if blind_from:
        x_t, target = blind_top(z0, x_t, noise, t, sched, blind_from)
    pred = unet(x_t, t, encode_prompts(tok, te, caps)).sample
    return eps_loss(pred, target, sched, t, floor=snr_floor)
