"""The recipe of the embedded model: ``python -m sdwidgets.training.shapes [stage]``.

Stages (each resumable, skipped when its output exists; ``all`` runs them in order):

    vae         train the world's codec (latent factor 4 or 8 chosen by measured pixel accuracy)
    base        pre-encode the captioned world, train text encoder + UNet jointly
    restart     continue the base from its EMA weights with a fresh optimiser (warm restart)
    restart2    a second warm restart, same noise (position words firm up)
    sharpen     a third warm restart with the base's plain noise (shapes sharpen, squares most)
    sharpen2    a fourth, the same again with a fresh schedule (the squares' corners)
    polish      continue it at a lower rate, weighted toward fine detail (sharper shapes)
    decoder     polish the VAE decoder with the encoder frozen
    adapt       fine-tune that decoder on latents the base generated too (img2img on renders)
    controlnet  train a canny ControlNet with the base frozen
    lora        train the bundled ``ring`` LoRA with :func:`sdwidgets.training.lora.train_lora`
    export      write the diffusers folder to sdwidgets/assets/shapes (fp16 safetensors)
    tiny-decoder  distil the preview decoder vae-tiny from the shipped VAE (:mod:`.tiny_decoder`)
    evaluate    score the shipped folder (table of issue 3; :mod:`.evaluate`)

Working files go to ``training-work/`` (git-ignored); timings to ``training-work/timings.json``.
Budgets and paths live in :mod:`.workspace`, the architecture in :mod:`.architecture`, how
training samples are noised in :mod:`.noise`, and the model card (rewritten by ``export`` and
``evaluate``) in :mod:`.model_card`.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import world
from .architecture import default_scheduler, text_config, training_scheduler, unet_config, vae_config
from .evaluate import stage_evaluate
from .model_card import write_model_card
from .tiny_decoder import stage_tiny_decoder
from .noise import BASE_NOISE, BLIND_FROM, PYRAMID_DISCOUNT, RESTART2_NOISE, RESTART_NOISE, SNR_FLOOR, blind_top, draw_timesteps, eps_loss, pyramid_noise, whiten_quiet
from .workspace import (ASSET, BASE_S, CONTROLNET_S, ADAPT_S, DECODER_S, LORA_S, N_TRAIN, POLISH_S, RESTART_S, RESTART2_S, SEED, SHARPEN_S, SHARPEN2_S, ALL,
                        VAE_PROBE_S, VAE_S, WORK, load_asset_pipe, log, optimise, record, recorded, train_for)


def _resume(ckpt: Path, modules: dict, opt) -> dict:
    """Load a stage's checkpoint (module state dicts + optimiser) and return its loop state."""
    if not ckpt.exists():
        return {"step": 0, "elapsed": 0.0, "losses": []}
    c = torch.load(ckpt, weights_only=False)
    for name, module in modules.items():
        module.load_state_dict(c[name])
    opt.load_state_dict(c["opt"])
    return c["state"]


def _saver(ckpt: Path, modules: dict, opt, state: dict):
    """A ``save()`` for :func:`train_for`: module state dicts, optimiser and loop state."""
    return lambda: torch.save({k: m.state_dict() for k, m in modules.items()}
                              | {"opt": opt.state_dict(), "state": state}, ckpt)


# ----------------------------------------------------------------------------- VAE
def heldout_images(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Held-out renders (half captioned-world incl. rings, half broad world) and their labels."""
    rng = np.random.default_rng(999_999)
    imgs = []
    for i in range(n):
        if i % 2 == 0:
            imgs.append(world.render(world.sample_scene(rng, shapes=world.SHAPES + ["ring"])))
        else:
            imgs.append(world.render_broad(rng))
    imgs = np.stack(imgs)
    return imgs, np.stack([world.nearest_palette(im) for im in imgs])



@torch.no_grad()
def round_trips(vae, imgs: np.ndarray) -> np.ndarray:
    """uint8 renders -> their decodes (posterior mean) as uint8, in batches of 64."""
    vae.eval()
    out = [world.to_uint8(vae.decode(vae.encode(world.to_tensor(imgs[i:i + 64])).latent_dist.mean).sample)
           for i in range(0, len(imgs), 64)]
    vae.train()
    return np.concatenate(out)


def vae_accuracy(vae, imgs: np.ndarray, labels: np.ndarray) -> float:
    pred = np.stack([world.nearest_palette(im) for im in round_trips(vae, imgs)])
    return float((pred == labels).mean())


def roundtrip_shape_accuracy(vae, n: int = 192) -> float:
    """Share of rendered scenes whose VAE round trip the analyser still reads as the right shape.
    (Pixel accuracy is mostly background: 120-s probes scored f=4 / f=8 at 60.1 / 62.4% pixels
    but 50 / 29% shapes; at 660 s f=4 led on both, 95.5 / 93.0% pixels and 94 / 72% shapes.)"""
    from .analyse import analyse

    rng = np.random.default_rng(888_888)
    scenes = [world.sample_scene(rng, force_full=True) for _ in range(n)]
    decodes = round_trips(vae, np.stack([world.render(s) for s in scenes]))
    return float(np.mean([analyse(im).shape == s.shape for im, s in zip(decodes, scenes)]))


def _vae_for(factor: int, tag: str, seconds: float):
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED + factor)
    vae = AutoencoderKL(**vae_config(factor))
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-4, weight_decay=0.0)
    ckpt = WORK / f"vae_f{factor}_{tag}.pt"
    state = _resume(ckpt, {"model": vae}, opt)
    rng = np.random.default_rng(SEED + state["step"])

    def step_fn(step: int) -> float:
        x = world.to_tensor(np.stack([world.render_broad(rng) for _ in range(32)]))
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + 1e-6 * post.kl().mean()
        return optimise(opt, loss, vae.parameters())

    if state["elapsed"] < seconds:
        train_for(f"vae f{factor} {tag}", seconds, state, opt, 5e-4, 100, step_fn,
                  _saver(ckpt, {"model": vae}, opt, state), save_every_s=90)
    return vae, state


def stage_vae() -> None:
    out = WORK / "vae"
    if (out / "config.json").exists():
        log("vae: exists, skipped")
        return
    t0 = time.time()
    imgs, labels = heldout_images()
    ring_imgs, ring_labels = ring_heldout()
    probe = {}
    for factor in (4, 8):
        vae, state = _vae_for(factor, "probe", VAE_PROBE_S)
        probe[factor] = (vae_accuracy(vae, imgs, labels), roundtrip_shape_accuracy(vae))
        log(f"vae probe f={factor}: {state['step']} steps, pixel accuracy {probe[factor][0]:.4f}, "
            f"shapes read back {probe[factor][1]:.3f}")
    # f=8 is faster downstream; take it unless f=4 codes the world clearly better, in pixels or in
    # the shapes the analyser reads back from round trips (see roundtrip_shape_accuracy).
    factor = 8 if probe[8][0] >= probe[4][0] - 0.005 and probe[8][1] >= probe[4][1] - 0.02 else 4
    log(f"vae: chose latent factor {factor}")
    record("vae_probe", {f"f{k}": v[0] for k, v in probe.items()} | {f"f{k}_shape": v[1] for k, v in probe.items()}
           | {"probe_s": VAE_PROBE_S, "chosen": factor})
    # continue the chosen probe for the rest of the budget
    probe_ckpt = WORK / f"vae_f{factor}_probe.pt"
    final_ckpt = WORK / f"vae_f{factor}_final.pt"
    if not final_ckpt.exists():
        final_ckpt.write_bytes(probe_ckpt.read_bytes())
    vae, state = _vae_for(factor, "final", VAE_S)
    acc = vae_accuracy(vae, imgs, labels)
    ring_acc = vae_accuracy(vae, ring_imgs, ring_labels)
    # latent scaling factor: 1/std of the latents of the captioned world
    rng = np.random.default_rng(SEED + 7)
    with torch.no_grad():
        x = world.to_tensor(np.stack([world.render(world.sample_scene(rng)) for _ in range(512)]))
        z = torch.cat([vae.encode(x[i:i + 128]).latent_dist.mean for i in range(0, 512, 128)])
    sf = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(out)
    record("vae", dict(factor=factor, steps=state["step"], train_s=round(state["elapsed"]),
                       pixel_accuracy=acc, ring_pixel_accuracy=ring_acc, scaling_factor=sf,
                       stage_wall_s=round(time.time() - t0)))
    log(f"vae: f={factor} accuracy {acc:.4f} (rings {ring_acc:.4f}) scaling {sf:.4f}")


def ring_heldout(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(424242)
    imgs = np.stack([world.render(world.sample_scene(rng, shapes=["ring"])) for _ in range(n)])
    return imgs, np.stack([world.nearest_palette(im) for im in imgs])



# Share of the decoder polish's images drawn from the captioned world (rings included), the rest
# from the broad world: what the models draw, where small squares had come back with round
# corners (0.4 via render_broad alone until decoder step 1,610; round trips of squares 84% ->
# 93% right, all shapes 92% -> 95%, with 2,300 probe steps at this share).
DECODER_CAPTIONED_SHARE = 0.6


def decoder_images(rng: np.random.Generator, n: int = 32) -> np.ndarray:
    return np.stack([world.render(world.sample_scene(rng, shapes=world.SHAPES + ["ring"]))
                     if rng.random() < DECODER_CAPTIONED_SHARE else world.render_broad(rng) for _ in range(n)])


def _decoder_only(lr: float, ckpt: Path):
    """The working VAE with its encoder frozen (so the base's latents stay valid), the decoder's
    parameters, an AdamW over them, and the loop state, all resumed from ``ckpt`` if it exists."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(WORK / "vae")
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return vae, params, opt, _resume(ckpt, {"model": vae}, opt)


def stage_decoder() -> None:
    """Polish the VAE decoder with the encoder frozen (the base model's latents stay valid)."""
    done = WORK / "vae" / "decoder_polish.json"
    if done.exists():
        log("decoder: exists, skipped")
        return
    t_stage = time.time()
    ckpt = WORK / "decoder.pt"
    vae, params, opt, state = _decoder_only(3e-4, ckpt)
    imgs, labels = heldout_images()
    before = vae_accuracy(vae, imgs, labels)

    def step_fn(step: int) -> float:
        x = world.to_tensor(decoder_images(np.random.default_rng(SEED * 13 + step)))
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
            z = z + 0.05 * z.std() * torch.randn_like(z)  # robustness to imperfect generated latents
        y = vae.decode(z).sample
        return optimise(opt, (y - x).abs().mean() + ((y - x) ** 2).mean(), params)

    train_for("decoder", DECODER_S, state, opt, 3e-4, 20, step_fn,
              _saver(ckpt, {"model": vae}, opt, state), curve_every=25, save_every_s=90)
    scores = vae_scores(vae)
    vae.save_pretrained(WORK / "vae")
    info = dict(steps=state["step"], train_s=round(state["elapsed"]), accuracy_before=before,
                **scores, stage_wall_s=round(time.time() - t_stage))
    done.write_text(json.dumps(info))
    rec = recorded().get("vae", {})
    record("vae", rec | {"encoder_decoder_steps": rec.get("steps"), "decoder_polish": info} | scores)
    log(f"decoder: pixel accuracy {before:.4f} -> {scores['pixel_accuracy']:.4f} ({scores})")


def vae_scores(vae) -> dict:
    """Held-out pixel accuracy of the VAE's decodes: on the mix used while training, and apart on
    the captioned world with rings (what the models draw), the broad world (stripes, thin lines,
    several shapes) and rings alone."""
    imgs, labels = heldout_images()
    ring_imgs, ring_labels = ring_heldout()
    captioned = vae_accuracy(vae, imgs[0::2], labels[0::2])
    broad = vae_accuracy(vae, imgs[1::2], labels[1::2])
    return dict(pixel_accuracy=(captioned + broad) / 2,  # the halves are the same size
                captioned_pixel_accuracy=captioned, broad_pixel_accuracy=broad,
                ring_pixel_accuracy=vae_accuracy(vae, ring_imgs, ring_labels))


# The adapt stage: the decoder also learns to decode the base's own latents. Pairs come from
# img2img on rendered scenes with their full captions (the layout is fixed by then; the UNet
# redraws edges and corners its own way), the render as the target, kept where the decode still
# overlaps the rendered shape (IoU >= ADAPT_MIN_IOU: the UNet may also move it a little). Small
# squares had come out pinched, as four-pointed blobs the analyser reads as circles: 1 in 12 of
# the base's were square, against 70% of the VAE's own round trips.
ADAPT_CANDIDATES = int(os.environ.get("SDW_ADAPT_PAIRS", "1536"))
ADAPT_STRENGTHS = (0.2, 0.3, 0.4)
ADAPT_MIN_IOU = 0.8
ADAPT_LR = 2e-4
# Weight of the pixels on a shape's outline (within 2 px of a colour change in the target) in
# the adapt loss, against 1 elsewhere: corners are a few dozen of 4,096 pixels, and the squares
# the analyser reads as circles differ from right ones only there (bounding-box fill 0.88-0.92).
ADAPT_EDGE_WEIGHT = float(os.environ.get("SDW_ADAPT_EDGE_WEIGHT", "4"))
ADAPT_PALETTE_CE = float(os.environ.get("SDW_ADAPT_PALETTE_CE", "1"))


def edge_band(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """(B,1,H,W) 1.0 where a pixel of ``x`` (B,3,H,W) lies within ``width`` px of a colour change."""
    import torch.nn.functional as F

    k = 2 * width + 1
    spread = F.max_pool2d(x, k, 1, width) + F.max_pool2d(-x, k, 1, width)  # local max - min
    return (spread.amax(1, keepdim=True) > 0.1).float()


def edge_weighted_loss(y: torch.Tensor, x: torch.Tensor, weight: float = ADAPT_EDGE_WEIGHT,
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


@torch.no_grad()
def generated_pairs(n: int = ADAPT_CANDIDATES, batch: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """(latent the base generated by img2img from a render, the render) pairs out of ``n``
    candidates; cached in the working folder."""
    path = WORK / "adapt_pairs.pt"
    if path.exists():
        d = torch.load(path, weights_only=False)
        return d["latents"], d["images"]
    from diffusers import StableDiffusionImg2ImgPipeline
    from tqdm.auto import tqdm

    from .analyse import blob_mask, iou

    i2i = StableDiffusionImg2ImgPipeline.from_pipe(work_pipe())
    i2i.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(SEED + 17)
    latents, images = [], []
    for i in tqdm(range(0, n, batch), desc="adapt pairs", mininterval=15, file=sys.stdout):
        scenes = [world.sample_scene(rng, force_full=True) for _ in range(batch)]
        imgs = np.stack([world.render(sc) for sc in scenes])
        strength = float(ADAPT_STRENGTHS[(i // batch) % len(ADAPT_STRENGTHS)])
        z = i2i([world.caption_of(sc) for sc in scenes], image=(world.to_tensor(imgs) + 1) / 2,
                strength=strength, num_inference_steps=20, guidance_scale=7.5, output_type="latent",
                generator=torch.Generator().manual_seed(SEED + i)).images / i2i.vae.config.scaling_factor
        decoded = world.to_uint8(i2i.vae.decode(z).sample)
        keep = [k for k, sc in enumerate(scenes) if iou(blob_mask(decoded[k]), world.shape_mask(sc)) >= ADAPT_MIN_IOU]
        latents.append(z[keep])
        images.append(imgs[keep])
    latents, images = torch.cat(latents), np.concatenate(images)
    torch.save(dict(latents=latents, images=images, candidates=n), path)
    return latents, images


def stage_adapt() -> None:
    """Fine-tune the VAE decoder (encoder frozen) on half generated pairs, half round trips."""
    done = WORK / "vae" / "adapt.json"
    if done.exists():
        log("adapt: exists, skipped")
        return
    t_stage = time.time()
    gen_z, gen_x = generated_pairs()
    ckpt = WORK / "adapt.pt"
    vae, params, opt, state = _decoder_only(ADAPT_LR, ckpt)
    before = vae_scores(vae)

    n_gen = 16 if len(gen_z) else 0  # (tiny test budgets may keep no pair)

    def step_fn(step: int) -> float:
        rng = np.random.default_rng(SEED * 19 + step)
        pick = torch.from_numpy(rng.integers(max(len(gen_z), 1), size=n_gen))
        x_rt = world.to_tensor(decoder_images(rng, 32 - n_gen))
        with torch.no_grad():
            z_rt = vae.encode(x_rt).latent_dist.mean
        z = torch.cat([gen_z[pick], z_rt])
        x = torch.cat([world.to_tensor(gen_x[pick.numpy()]), x_rt])
        y = vae.decode(z).sample
        return optimise(opt, edge_weighted_loss(y, x, palette=ADAPT_PALETTE_CE), params)

    train_for("adapt", ADAPT_S, state, opt, ADAPT_LR, 20, step_fn,
              _saver(ckpt, {"model": vae}, opt, state), curve_every=25, save_every_s=90)
    scores = vae_scores(vae)
    vae.save_pretrained(WORK / "vae")
    info = dict(steps=state["step"], train_s=round(state["elapsed"]), pairs=len(gen_z),
                candidates=ADAPT_CANDIDATES, min_iou=ADAPT_MIN_IOU, edge_weight=ADAPT_EDGE_WEIGHT, palette_ce=ADAPT_PALETTE_CE, strengths=list(ADAPT_STRENGTHS), before=before, **scores,
                stage_wall_s=round(time.time() - t_stage))
    done.write_text(json.dumps(info))
    record("adapt", info)
    record("vae", recorded().get("vae", {}) | scores)  # the shipped decoder's accuracies
    log(f"adapt: {state['step']} steps; VAE round trips {before} -> {scores}")


# ----------------------------------------------------------------------------- base model
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


def load_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(WORK / "vae").eval().requires_grad_(False)


def world_latents() -> tuple[list[world.Scene], torch.Tensor]:
    """The captioned training world, encoded once by the VAE (mean * scaling_factor)."""
    path = WORK / "latents.pt"
    if path.exists():
        d = torch.load(path, weights_only=False)
        return [world.Scene(**s) for s in d["scenes"]], d["latents"]
    from tqdm.auto import tqdm

    vae = load_vae()
    rng = np.random.default_rng(SEED + 1)
    scenes = [world.sample_scene(rng) for _ in range(N_TRAIN)]
    lat = []
    t0 = time.time()
    with torch.no_grad():
        for i in tqdm(range(0, N_TRAIN, 256), desc="encode", mininterval=10, file=sys.stdout):
            x = world.to_tensor(np.stack([world.render(s) for s in scenes[i:i + 256]]))
            lat.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    lat = torch.cat(lat)
    torch.save(dict(scenes=[s.__dict__ for s in scenes], latents=lat), path)
    record("encode", dict(images=N_TRAIN, wall_s=round(time.time() - t0)))
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


BASE_BATCH = 64


def _train_base(unet, te, tok, ckpt: Path, seconds: float, lr: float, warmup: int,
                **loss_kw) -> dict:
    """Train text encoder + UNet jointly (EMA kept) for ``seconds``, resumable from ``ckpt``;
    leaves the EMA weights in ``unet``/``te`` and returns what it did, ``loss_kw`` (the noise
    that :func:`base_loss` got) included, for the timings record."""
    scenes, lat = world_latents()
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema_u, ema_t = EMA(unet), EMA(te)
    sched = training_scheduler()
    modules = {"unet": unet, "te": te, "ema_u": ema_u, "ema_t": ema_t}
    state = _resume(ckpt, modules, opt)
    log(f"base: unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, "
        f"text encoder {sum(p.numel() for p in te.parameters()) / 1e6:.2f} M, {len(scenes)} images")

    def step_fn(step: int) -> float:
        loss = optimise(opt, base_loss(unet, te, tok, sched, scenes, lat, step, BASE_BATCH, **loss_kw), params)
        ema_u.update(unet, step)
        ema_t.update(te, step)
        return loss

    final_loss = train_for(ckpt.stem, seconds, state, opt, lr, warmup, step_fn,
                           _saver(ckpt, modules, opt, state))
    unet.load_state_dict(ema_u.shadow)
    te.load_state_dict(ema_t.shadow)
    log(f"{ckpt.stem}: {state['step']} steps, loss {final_loss:.4f}")
    return dict(steps=state["step"], batch=BASE_BATCH, lr=lr, train_s=round(state["elapsed"]), final_loss=final_loss,
                **loss_kw, loss_curve_every_50=state["losses"])


def stage_base() -> None:
    out = WORK / "base"
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
    info = _train_base(unet, te, tok, WORK / "base.pt", BASE_S, 6e-4, 300, **BASE_NOISE)
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


def position_probe(n: int = int(os.environ.get("SDW_PROBE_N", 48))) -> float:
    """Share of ``n`` grammar prompts (not the evaluation's: another seed) whose shape the working
    base places where the prompt says, at the default guidance and 20 Euler steps."""
    from .evaluate import default_guidance, eval_prompts, generate, grammar_hits

    scenes = eval_prompts(n, seed=SEED + 21)
    with torch.no_grad():
        images = generate(work_pipe(), [world.caption_of(sc) for sc in scenes], list(range(n)),
                          guidance_scale=default_guidance())
    return round(float(np.mean(grammar_hits(scenes, images)["position"])), 4)


def _continue_base(name: str, seconds: float, lr: float, warmup: int, probe: bool = False, **loss_kw) -> None:
    """Continue the base from its EMA weights with a fresh AdamW and a new cosine schedule;
    ``base/<name>.json`` marks the stage done (``probe``: it also holds :func:`position_probe`)."""
    out = WORK / "base"
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
    info = _train_base(unet, te, tok, WORK / f"{name}.pt", seconds, lr, warmup, **loss_kw)
    unet.save_pretrained(out / "unet")
    te.save_pretrained(out / "text_encoder")
    if probe:
        info["position_probe"] = position_probe()
        log(f"{name}: position probe {info['position_probe']:.1%}")
    info["stage_wall_s"] = round(time.time() - t_stage)
    done.write_text(json.dumps(info))
    record(name, info)


def stage_restart() -> None:
    """A warm restart of the base: continue from its EMA weights with a fresh optimiser and a new
    cosine schedule at half the first peak rate. On a GPU study (study/recipe_study.py) the
    7,840-step base, which ignored position words (x0 moved 0.014 by left/right), learnt them
    within 2,000 restarted steps (position 36% -> 99% on 200 prompts)."""
    _continue_base("restart", RESTART_S, RESTART_LR, 100, probe=True, **RESTART_NOISE)


def _restart_probe() -> float | None:
    path = WORK / "base" / "restart.json"
    return json.loads(path.read_text()).get("position_probe") if path.exists() else None


def stage_restart2() -> None:
    """A second warm restart at the restart's rate, with :data:`.noise.RESTART2_NOISE` (the position
    share kept, the SNR floor back to 0.3 so that shape suffers less). On the CPU, with the default
    budgets, the first restart left position words half learnt (60%, still rising) and a second
    one of 900 s took them to 99% at the same shape (study/README.md, continue_pilot.py). Its
    default is 720 s, and the base's 1,350 s (was 2,000) keep `all` within 2 hours with `sharpen`.
    Skipped when the first restart's position probe reached :data:`POSITION_LEARNT`: sharpen then
    gets its time."""
    probe, done = _restart_probe(), WORK / "base" / "restart2.json"
    if probe is not None and probe >= POSITION_LEARNT and not done.exists():
        log(f"restart2: skipped, position probe {probe:.1%} after restart; its {RESTART2_S:.0f} s go to sharpen")
        done.write_text(json.dumps(dict(skipped=True, position_probe_after_restart=probe)))
        record("restart2", dict(skipped=True, position_probe_after_restart=probe))
    _continue_base("restart2", RESTART2_S, RESTART_LR, 100, **RESTART2_NOISE)


def stage_sharpen() -> None:
    """A third warm restart, with the base's plain noise (no SNR floor). The restarts' floor weighs
    the noisiest timesteps so much that, while position words are learnt, shape stands still
    (76-78.5% after the first restart whatever its noise; squares come out with round corners).
    Once position is learnt, the plain noise gives the quiet timesteps their share back: on the CPU,
    from the second restart's weights, shape went 77.1 -> 92.5% (squares 35 -> 83%), position
    99 -> 96.5% in 900 s (study/README.md, continue_pilot.py ``base``; guidance 5, 200 prompts).
    A skipped restart2 adds its time; :func:`stage_sharpen2` follows."""
    _continue_base("sharpen", sharpen_seconds(), RESTART_LR, 50, **BASE_NOISE)


def stage_sharpen2() -> None:
    """Sharpen again from its EMA weights with a fresh schedule: a single 1,470-s sharpen stopped at
    shape 86.2% (squares 36 of 67, their median box fill 0.902 against the analyser's 0.9), and
    360 s more as a second restart took those weights to 90.4% (squares 47;
    study/outline_sharpen_pilot.py, plain arm). Its 360 s come out of sharpen's 750; the first
    one-piece run with it (1,110 + 360 s) scored shape 90.8%, squares 45 of 67."""
    _continue_base("sharpen2", SHARPEN2_S, RESTART_LR, 50, **BASE_NOISE)


def sharpen_seconds() -> float:
    """Sharpen's budget: its own, plus restart2's when that was skipped."""
    restart2 = WORK / "base" / "restart2.json"
    skipped = restart2.exists() and json.loads(restart2.read_text()).get("skipped", False)
    return SHARPEN_S + (RESTART2_S if skipped else 0)


def stage_polish() -> None:
    """Sharpen the restarted base's shapes: continue at a lower rate with :data:`POLISH_NOISE`.
    The layout-deciding half (t >= 500) keeps the pyramid noise that taught position; squares
    had come out with soft corners that the analyser reads as circles."""
    _continue_base("polish", POLISH_S, POLISH_LR, 50, **POLISH_NOISE)


# ----------------------------------------------------------------------------- export
@torch.no_grad()
def fit_preview_factors(vae, n: int = 256) -> dict:
    """Latent (model space) -> RGB in [-1, 1] factors fitted on this VAE's own decodes (sdwidgets.preview)."""
    from PIL import Image

    from ..preview import fit_latent_rgb

    rng = np.random.default_rng(SEED + 11)
    images = [Image.fromarray(world.render_broad(rng)) for _ in range(n)]
    fit = fit_latent_rgb(vae, images[: n // 2])
    z = latents_of(vae, images[n // 2:])
    mae = float(np.mean([np.abs(np.asarray(p, dtype=np.float32) / 127.5 - 1 - t).mean()
                         for p, t in zip(fit.to_images(z), _pooled_decodes(vae, z))]))
    return {"factors": [[round(float(v), 5) for v in row] for row in fit.factors],
            "bias": [round(float(v), 5) for v in fit.bias], "mean_abs_error": round(mae, 4),
            "space": "model-space latents (x scaling_factor) -> RGB in [-1, 1]; ridge fit, held-out MAE"}


def latents_of(vae, images):
    from ..latents import encode

    with torch.no_grad():
        return encode(vae, images)


def _pooled_decodes(vae, z):
    import torch.nn.functional as F

    from ..latents import decode

    return F.adaptive_avg_pool2d(decode(vae, z), z.shape[-2:]).permute(0, 2, 3, 1).cpu().numpy()


def work_pipe():
    """The pipeline of the working folder's base and VAE (float32, progress bars off)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    base = WORK / "base"
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(WORK / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(base / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(base / "unet"),
        scheduler=default_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stage_export() -> None:
    """Write the diffusers folder (fp16 safetensors); re-run after each later stage."""
    from diffusers import ControlNetModel
    from safetensors import safe_open
    from safetensors.torch import save_file

    base = WORK / "base"
    ASSET.mkdir(parents=True, exist_ok=True)
    pipe = work_pipe()
    vae = pipe.vae
    pf = fit_preview_factors(vae)
    (ASSET / "preview_factors.json").write_text(json.dumps(pf, indent=1))
    record("preview_factors_mae", pf["mean_abs_error"])
    pipe.to(torch.float16)
    pipe.save_pretrained(ASSET, safe_serialization=True)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):  # our vocabulary files too
        (ASSET / "tokenizer" / name).write_bytes((base / "tokenizer" / name).read_bytes())
    if (WORK / "controlnet" / "config.json").exists():
        ControlNetModel.from_pretrained(WORK / "controlnet").to(torch.float16).save_pretrained(
            ASSET / "controlnet-canny", safe_serialization=True)
    ring = WORK / "ring.safetensors"
    if ring.exists():
        (ASSET / "loras").mkdir(exist_ok=True)
        with safe_open(str(ring), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k).to(torch.float16) for k in f.keys()}
        save_file(tensors, str(ASSET / "loras" / "ring.safetensors"), metadata=meta)
        loss = ring.with_suffix(".loss.json")
        if loss.exists():
            (ASSET / "loras" / "ring.loss.json").write_text(loss.read_text())
    sizes = {str(p.relative_to(ASSET)): p.stat().st_size for p in ASSET.rglob("*.safetensors")}
    record("weights_bytes", sizes | {"total": sum(sizes.values())})
    log(f"export: {sum(sizes.values()) / 1e6:.2f} MB of weights in {ASSET}")



# ----------------------------------------------------------------------------- ControlNet
def stage_controlnet() -> None:
    out = WORK / "controlnet"
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
    scenes, lat = world_latents()
    opt = torch.optim.AdamW(cn.parameters(), lr=1e-3, weight_decay=0.01)
    sched = training_scheduler()
    ckpt = WORK / "controlnet.pt"
    state = _resume(ckpt, {"cn": cn}, opt)
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

    run_loss = train_for("controlnet", CONTROLNET_S, state, opt, 1e-3, 50, step_fn,
                         _saver(ckpt, {"cn": cn}, opt, state), curve_every=25)
    cn.save_pretrained(out)
    record("controlnet", dict(steps=state["step"], batch=B, train_s=round(state["elapsed"]),
                              stage_wall_s=round(time.time() - t_stage), final_loss=run_loss,
                              params=sum(p.numel() for p in cn.parameters()),
                              loss_curve_every_25=state["losses"]))


# ----------------------------------------------------------------------------- LoRA
# From GPU studies at the CPU budget's 700 steps (study/lora_study.py): 128 rings at lr 1e-3,
# rank 8 gave 60% rings at strength 1; 512 rings at 2e-3 gave 83%, on the restarted base 79%;
# rank 16 on top of that 90%, lr 3e-3 86%. On the polished base with the adapted decoder, rank 16
# at 2e-3 fell to 79% (broken and doubled rings); at 3e-3, 1,170 steps in 270 s, 96%.
RING_LR = 3e-3
RING_IMAGES = 512
RING_RANK = 16


def ring_training_set(n: int = RING_IMAGES, seed: int = SEED + 5):
    """Rings captioned with the trigger: 'a [size] red sks [position] on a blue background'."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, shapes=["ring"], force_full=True) for _ in range(n)]
    return ([Image.fromarray(world.render(s)) for s in scenes],
            [world.caption_of(s, shape_word=world.TRIGGER) for s in scenes])


def stage_lora() -> None:
    out = WORK / "ring.safetensors"
    if out.exists():
        log("lora: exists, skipped")
        return
    from .lora import train_lora

    t0 = time.time()
    images, captions = ring_training_set()
    train_lora(images, captions, base_model=ASSET, output=out, rank=RING_RANK, steps=2000, lr=RING_LR,
               batch_size=16, trigger_words=[world.TRIGGER], high_noise_share=0.5,
               max_seconds=LORA_S, seed=SEED)
    from .lora import lora_metadata

    meta = lora_metadata(out)
    record("lora", dict(images=len(images), rank=RING_RANK, lr=RING_LR, high_noise_share=0.5, steps=int(meta["steps"]),
                        train_s=float(meta["train_seconds"]), stage_wall_s=round(time.time() - t0)))



# ----------------------------------------------------------------------------- main
STAGES: dict = {"vae": stage_vae, "base": stage_base, "restart": stage_restart, "restart2": stage_restart2, "sharpen": stage_sharpen,
                "sharpen2": stage_sharpen2, "polish": stage_polish, "decoder": stage_decoder, "adapt": stage_adapt, "export": stage_export,
                "controlnet": stage_controlnet, "lora": stage_lora, "tiny-decoder": stage_tiny_decoder,
                "evaluate": stage_evaluate}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    which = argv[0] if argv else "all"
    if which != "all" and which not in STAGES:
        raise SystemExit(f"unknown stage {which!r}; choose from all, {', '.join(STAGES)}")
    torch.set_num_threads(int(os.environ.get("SDW_THREADS", 2)))
    WORK.mkdir(parents=True, exist_ok=True)
    for name in ALL if which == "all" else [which]:
        t0 = time.time()
        STAGES[name]()
        if name in ("export", "evaluate"):  # the stages that change the shipped folder or its scores
            write_model_card()
        log(f"stage {name}: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
