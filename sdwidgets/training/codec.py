"""The world's codec: the VAE (``vae``: latent factor 4 or 8, chosen by measured pixel and shape
accuracy of round trips), its decoder polished with the encoder frozen (``decoder``), then
fine-tuned on latents the base generated too (``adapt``), and the held-out scores of each."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import world
from .architecture import vae_config
from .losses import edge_weighted_loss
from .workspace import (DEFAULT_BUDGETS, SEED, Budgets, log, optimise, record, recorded, resume, saver, train_for,
                        work_dir, work_pipe)


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
    ckpt = work_dir() / f"vae_f{factor}_{tag}.pt"
    state = resume(ckpt, {"model": vae}, opt)
    rng = np.random.default_rng(SEED + state["step"])

    def step_fn(step: int) -> float:
        x = world.to_tensor(np.stack([world.render_broad(rng) for _ in range(32)]))
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + 1e-6 * post.kl().mean()
        return optimise(opt, loss, vae.parameters())

    if state["elapsed"] < seconds:
        train_for(f"vae f{factor} {tag}", seconds, state, opt, 5e-4, 100, step_fn,
                  saver(ckpt, {"model": vae}, opt, state), save_every_s=90)
    return vae, state


def stage_vae(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    out = work_dir() / "vae"
    if (out / "config.json").exists():
        log("vae: exists, skipped")
        return
    t0 = time.time()
    imgs, labels = heldout_images()
    ring_imgs, ring_labels = ring_heldout()
    probe = {}
    for factor in (4, 8):
        vae, state = _vae_for(factor, "probe", budgets.vae_probe_s)
        probe[factor] = (vae_accuracy(vae, imgs, labels), roundtrip_shape_accuracy(vae))
        log(f"vae probe f={factor}: {state['step']} steps, pixel accuracy {probe[factor][0]:.4f}, "
            f"shapes read back {probe[factor][1]:.3f}")
    # f=8 is faster downstream; take it unless f=4 codes the world clearly better, in pixels or in
    # the shapes the analyser reads back from round trips (see roundtrip_shape_accuracy).
    factor = 8 if probe[8][0] >= probe[4][0] - 0.005 and probe[8][1] >= probe[4][1] - 0.02 else 4
    log(f"vae: chose latent factor {factor}")
    record("vae_probe", {f"f{k}": v[0] for k, v in probe.items()} | {f"f{k}_shape": v[1] for k, v in probe.items()}
           | {"probe_s": budgets.vae_probe_s, "chosen": factor})
    # continue the chosen probe for the rest of the budget
    probe_ckpt = work_dir() / f"vae_f{factor}_probe.pt"
    final_ckpt = work_dir() / f"vae_f{factor}_final.pt"
    if not final_ckpt.exists():
        final_ckpt.write_bytes(probe_ckpt.read_bytes())
    vae, state = _vae_for(factor, "final", budgets.vae_s)
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

    vae = AutoencoderKL.from_pretrained(work_dir() / "vae")
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return vae, params, opt, resume(ckpt, {"model": vae}, opt)


def stage_decoder(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Polish the VAE decoder with the encoder frozen (the base model's latents stay valid)."""
    done = work_dir() / "vae" / "decoder_polish.json"
    if done.exists():
        log("decoder: exists, skipped")
        return
    t_stage = time.time()
    ckpt = work_dir() / "decoder.pt"
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

    train_for("decoder", budgets.decoder_s, state, opt, 3e-4, 20, step_fn,
              saver(ckpt, {"model": vae}, opt, state), curve_every=25, save_every_s=90)
    scores = vae_scores(vae)
    vae.save_pretrained(work_dir() / "vae")
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
ADAPT_STRENGTHS = (0.2, 0.3, 0.4)
ADAPT_MIN_IOU = 0.8
ADAPT_LR = 2e-4
# The number of candidate pairs (Budgets.adapt_pairs) and the loss's weights are budgets: the
# outline pixels (within 2 px of a colour change in the target) weigh Budgets.adapt_edge_weight
# against 1 elsewhere: corners are a few dozen of 4,096 pixels, and the squares the analyser
# reads as circles differ from right ones only there (bounding-box fill 0.88-0.92); the palette
# cross-entropy (losses.palette_ce) weighs Budgets.adapt_palette_ce.


@torch.no_grad()
def generated_pairs(n: int = DEFAULT_BUDGETS.adapt_pairs, batch: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """(latent the base generated by img2img from a render, the render) pairs out of ``n``
    candidates; cached in the working folder."""
    path = work_dir() / "adapt_pairs.pt"
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


def stage_adapt(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Fine-tune the VAE decoder (encoder frozen) on half generated pairs, half round trips."""
    done = work_dir() / "vae" / "adapt.json"
    if done.exists():
        log("adapt: exists, skipped")
        return
    t_stage = time.time()
    gen_z, gen_x = generated_pairs(budgets.adapt_pairs)
    ckpt = work_dir() / "adapt.pt"
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
        return optimise(opt, edge_weighted_loss(y, x, weight=budgets.adapt_edge_weight, palette=budgets.adapt_palette_ce), params)

    train_for("adapt", budgets.adapt_s, state, opt, ADAPT_LR, 20, step_fn,
              saver(ckpt, {"model": vae}, opt, state), curve_every=25, save_every_s=90)
    scores = vae_scores(vae)
    vae.save_pretrained(work_dir() / "vae")
    info = dict(steps=state["step"], train_s=round(state["elapsed"]), pairs=len(gen_z),
                candidates=budgets.adapt_pairs, min_iou=ADAPT_MIN_IOU, edge_weight=budgets.adapt_edge_weight, palette_ce=budgets.adapt_palette_ce, strengths=list(ADAPT_STRENGTHS), before=before, **scores,
                stage_wall_s=round(time.time() - t_stage))
    done.write_text(json.dumps(info))
    record("adapt", info)
    record("vae", recorded().get("vae", {}) | scores)  # the shipped decoder's accuracies
    log(f"adapt: {state['step']} steps; VAE round trips {before} -> {scores}")
