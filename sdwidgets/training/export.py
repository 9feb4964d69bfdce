"""The ``export`` stage: the working folder's pipeline (with its ControlNet and the ring LoRA when
trained) written as the shipped diffusers folder in fp16, with the latent preview's factors
fitted on its VAE."""
from __future__ import annotations

import json

import numpy as np
import torch

from . import world
from .workspace import DEFAULT_BUDGETS, SEED, Budgets, asset_dir, log, record, work_dir, work_pipe


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


def stage_export(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Write the diffusers folder (fp16 safetensors) to :func:`.workspace.asset_dir`; re-run after
    each later stage. (No budget: ``budgets`` only for the stage table's one signature.)"""
    from diffusers import ControlNetModel
    from safetensors import safe_open
    from safetensors.torch import save_file

    base, asset = work_dir() / "base", asset_dir()
    asset.mkdir(parents=True, exist_ok=True)
    pipe = work_pipe()
    vae = pipe.vae
    pf = fit_preview_factors(vae)
    (asset / "preview_factors.json").write_text(json.dumps(pf, indent=1))
    record("preview_factors_mae", pf["mean_abs_error"])
    pipe.to(torch.float16)
    pipe.save_pretrained(asset, safe_serialization=True)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):  # our vocabulary files too
        (asset / "tokenizer" / name).write_bytes((base / "tokenizer" / name).read_bytes())
    if (work_dir() / "controlnet" / "config.json").exists():
        ControlNetModel.from_pretrained(work_dir() / "controlnet").to(torch.float16).save_pretrained(
            asset / "controlnet-canny", safe_serialization=True)
    ring = work_dir() / "ring.safetensors"
    if ring.exists():
        (asset / "loras").mkdir(exist_ok=True)
        with safe_open(str(ring), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k).to(torch.float16) for k in f.keys()}
        save_file(tensors, str(asset / "loras" / "ring.safetensors"), metadata=meta)
        loss = ring.with_suffix(".loss.json")
        if loss.exists():
            (asset / "loras" / "ring.loss.json").write_text(loss.read_text())
    sizes = {str(p.relative_to(asset)): p.stat().st_size for p in asset.rglob("*.safetensors")}
    # the model's 20 MB budget: everything but the preview decoder (vae-tiny), a helper of its own
    total = sum(v for k, v in sizes.items() if not k.startswith("vae-tiny/"))
    record("weights_bytes", sizes | {"total": total})
    log(f"export: {total / 1e6:.2f} MB of model weights in {asset}")
