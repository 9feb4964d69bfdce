"""LoRA training for the user: ``train_lora(images, caption, ...) -> Path``.

The usual recipe, through peft: LoRA (rank 4-16) on the UNet's attention projections,
feed-forward layers and convolutions (LoCon style: a small UNet needs its convolutions
adapted too), AdamW with a cosine schedule, a tqdm progress bar, a recorded loss curve.
The result is a diffusers-format ``.safetensors`` file that
``StableDiffusionPipeline.load_lora_weights`` (and so ``Session.load_lora``) loads, with
metadata: rank, alpha, base model, trigger words, target modules, the loss curve.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: LoRA targets in diffusers' UNet2DConditionModel: attention, feed-forward, convolutions.
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2",
                   "conv1", "conv2", "proj_in", "proj_out")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def default_base_model() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "shapes"


def _load_images(images, caption) -> tuple[list, list[str]]:
    from PIL import Image

    if isinstance(images, (str, Path)):
        folder = Path(images)
        if not folder.is_dir():
            raise ValueError(f"images must be a folder, or a list of images; {str(folder)!r} is not a folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
        pics = [Image.open(p).convert("RGB") for p in files]
        if caption is None:  # sidecar captions: img.png + img.txt
            caption = [p.with_suffix(".txt").read_text().strip() if p.with_suffix(".txt").exists() else ""
                       for p in files]
    else:
        pics = [im if hasattr(im, "convert") else Image.fromarray(np.asarray(im, dtype=np.uint8))
                for im in images]
        pics = [im.convert("RGB") for im in pics]
        if not pics:
            raise ValueError("images: got an empty list")
    if caption is None:
        raise ValueError("caption is required (a string, or one string per image)")
    captions = [caption] * len(pics) if isinstance(caption, str) else list(caption)
    if len(captions) != len(pics):
        raise ValueError(f"caption: got {len(captions)} captions for {len(pics)} images")
    return pics, captions


def _training_device(device: str | None) -> str:
    """``device`` checked before any work: None picks CUDA when there is one, else the CPU."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine's torch sees no CUDA GPU; use 'cpu' or leave it out")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return str(device)


def train_lora(
    images: str | Path | Sequence,
    caption: str | Sequence[str] | None,
    *,
    base_model: str | Path | None = None,
    output: str | Path = "lora.safetensors",
    rank: int = 8,
    alpha: float | None = None,
    steps: int = 500,
    lr: float = 1e-4,
    batch_size: int = 8,
    target_modules: Iterable[str] = DEFAULT_TARGETS,
    trigger_words: Sequence[str] | None = None,
    warmup_steps: int | None = None,
    high_noise_share: float = 0.0,
    max_seconds: float | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
) -> Path:
    """Train a LoRA on ``images`` (a folder or a list of PIL images / arrays) with ``caption``.

    ``caption`` is one string for all images, or one per image; for a folder, ``None``
    reads ``<image>.txt`` beside each image.  ``trigger_words`` default to the caption words
    that the base tokenizer does not know as whole words, plus ``sks`` if used.
    ``high_noise_share`` of each batch draws its timesteps from the noisier half (where a
    concept's layout is decided; 0 = the usual uniform draw).  Returns the path of the saved
    ``.safetensors`` file; the loss curve is saved in its metadata and next to it as
    ``<name>.loss.json``. ``device`` defaults to CUDA when there is one, else the CPU; the
    random draws happen on the CPU either way, so a seed means the same batches everywhere.
    """
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from .noise import draw_timesteps

    # 1. Check inputs
    if not 1 <= int(rank) <= 256:
        raise ValueError(f"rank must be between 1 and 256, got {rank!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be at least 1, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not 0.0 <= high_noise_share <= 1.0:
        raise ValueError(f"high_noise_share must be between 0 and 1, got {high_noise_share!r}")
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors, got {str(output)!r}")
    pics, captions = _load_images(images, caption)
    base_model = Path(base_model) if base_model is not None else default_base_model()
    alpha = float(alpha if alpha is not None else rank)
    device = _training_device(device)
    target_modules = list(target_modules)

    # 2. Load the base model (frozen)
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(base_model), torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    vae, te, tok, unet = pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet
    for m in (vae, te, unet):
        m.requires_grad_(False).to(device)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    size = unet.config.sample_size * pipe.vae_scale_factor

    # 3. Encode images and captions once
    with torch.no_grad():
        x = torch.stack([torch.from_numpy(np.asarray(p.resize((size, size)), dtype=np.float32))
                         for p in pics]).permute(0, 3, 1, 2).to(device) / 127.5 - 1
        latents = torch.cat([vae.encode(x[i:i + 32]).latent_dist.mean for i in range(0, len(x), 32)])
        latents = latents * vae.config.scaling_factor
        uniq = sorted(set(captions))
        ids = tok(uniq, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        emb_u = te(ids.to(device))[0]
        emb = emb_u[torch.tensor([uniq.index(c) for c in captions], device=device)]
    if trigger_words is None:
        vocab = {w[:-4] for w in tok.get_vocab() if w.endswith("</w>")}
        words = sorted({w for c in captions for w in c.lower().split()})
        trigger_words = [w for w in words if w not in vocab or w == "sks"]

    # 4. Add the LoRA (peft) to the UNet
    config = LoraConfig(r=int(rank), lora_alpha=alpha, target_modules=target_modules,
                        init_lora_weights="gaussian")
    unet.add_adapter(config)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    warm = warmup_steps if warmup_steps is not None else max(1, steps // 20)

    planned = [steps]  # with max_seconds, the cosine ends when the time does

    def lr_lambda(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, planned[0] - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)

    # 5. Train
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    unet.train()
    t0 = time.time()
    bar = tqdm(range(steps), desc="train_lora", disable=not progress, unit="step")
    for step in bar:
        idx = torch.randint(0, len(latents), (min(batch_size, len(latents)),), generator=gen)
        idx = idx.to(device)
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = draw_timesteps(len(idx), high_noise_share, noise_sched.config.num_train_timesteps, gen).to(device)
        zt = noise_sched.add_noise(z0, noise, t)
        pred = unet(zt, t, emb[idx]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(round(float(loss.item()), 5))
        if max_seconds is not None and step >= 10:
            rate = (time.time() - t0) / (step + 1)
            planned[0] = max(step + 2, min(steps, int(max_seconds / rate)))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        if max_seconds is not None and time.time() - t0 > max_seconds:
            break
    bar.close()
    unet.eval().to("cpu")
    seconds = time.time() - t0

    # 6. Save in diffusers format, then add our metadata
    output.parent.mkdir(parents=True, exist_ok=True)
    # PEFT-format keys (lora_A/lora_B), which load_lora_weights reads natively. (diffusers'
    # convert_state_dict_to_diffusers turns only the attention keys into the old
    # `.lora.down/.up` names when conv layers are targeted too, and the loader then skips them.)
    layers = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(
        output.parent, unet_lora_layers=layers, weight_name=output.name, safe_serialization=True,
        unet_lora_adapter_metadata=config.to_dict())
    with safe_open(str(output), "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    curve = losses if len(losses) <= 400 else [
        round(float(np.mean(c)), 5) for c in np.array_split(np.array(losses), 400)]
    meta.update({
        "sdwidgets.rank": str(rank), "sdwidgets.alpha": str(alpha),
        "sdwidgets.base_model": base_model.name if base_model == default_base_model() else str(base_model),
        "sdwidgets.trigger_words": json.dumps(list(trigger_words)),
        "sdwidgets.target_modules": json.dumps(target_modules),
        "sdwidgets.steps": str(len(losses)), "sdwidgets.lr": str(lr),
        "sdwidgets.high_noise_share": str(high_noise_share),
        "sdwidgets.batch_size": str(batch_size), "sdwidgets.images": str(len(pics)), "sdwidgets.device": device,
        "sdwidgets.train_seconds": f"{seconds:.1f}",
        "sdwidgets.loss_curve": json.dumps(curve),
    })
    save_file(tensors, str(output), metadata=meta)
    output.with_suffix(".loss.json").write_text(json.dumps({"loss": losses, "seconds": round(seconds, 1)}))
    return output


def lora_metadata(path: str | Path) -> dict:
    """The metadata of a LoRA file saved by :func:`train_lora` (values JSON-decoded)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    out = {}
    for k, v in meta.items():
        key = k.removeprefix("sdwidgets.")
        try:
            out[key] = json.loads(v)
        except (ValueError, TypeError):
            out[key] = v
    return out
