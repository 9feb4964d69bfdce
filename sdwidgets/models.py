"""Model resolution and loading: builtin alias, local diffusers folder, single file, hub id.

`resolve()` only looks at names and the file system (no torch, no network), so a
bad model name fails before any model work. `load_pipeline()` does the loading.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError, ModelNotFoundError, ParamError, UnsafeModelError
from .images import file_sha256
from .validate import close_matches

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = "shapes"
# Alias -> folder shipped inside the package.
BUILTIN_MODELS = {"shapes": ASSETS / "shapes"}

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from. `key` identifies it in the Session's cache."""

    kind: str            # "builtin" | "folder" | "single_file" | "hub"
    location: str        # folder/file path or hub id
    name: str            # short display name (for the log and the A1111 "Model:" field)
    allow_unsafe: bool = False

    @property
    def key(self) -> str:
        return self.location


def resolve(spec: str | Path | None, *, allow_unsafe: bool = False) -> ModelRef:
    """Turn what the user typed into a ModelRef, or raise ModelNotFoundError / UnsafeModelError."""
    if spec is None or str(spec).strip() == "":
        spec = DEFAULT_MODEL
    text = str(spec).strip()
    if text in BUILTIN_MODELS:
        folder = BUILTIN_MODELS[text]
        if not (folder / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"model: the builtin model {text!r} is not installed at {folder} "
                "(train it with `python -m sdwidgets.training.shapes`)")
        return ModelRef("builtin", str(folder), text)
    path = Path(text).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_unsafe:
            raise UnsafeModelError(
                f"model: {text!r} is a pickled checkpoint; loading it can run arbitrary code. "
                "Use a .safetensors file or a diffusers folder, or pass allow_unsafe=True if you trust its source.")
        if not path.is_file():
            raise ModelNotFoundError(f"model: no such file: {text!r}")
        return ModelRef("single_file", str(path.resolve()), path.stem, allow_unsafe=True)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(f"model: folder {text!r} is not a diffusers model (no model_index.json)")
        return ModelRef("folder", str(path.resolve()), path.name)
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise ModelNotFoundError(f"model: no such file: {text!r}")
        return ModelRef("single_file", str(path.resolve()), path.stem)
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return ModelRef("hub", text, text.split("/")[-1])
    near = close_matches(text, BUILTIN_MODELS)
    if near:
        raise ModelNotFoundError(f"model: {text!r} is not a builtin alias; did you mean {near[0]!r}?")
    raise ModelNotFoundError(
        f"model: {text!r} is not a builtin alias ({', '.join(BUILTIN_MODELS)}), an existing diffusers folder, "
        "a .safetensors file or a hub id like 'stabilityai/sd-turbo'")


def weights_hash(ref: ModelRef) -> str:
    """sha256 over the model's weight files (name + content hash), the content identity in the log.

    For a hub id the files are those of the local snapshot the pipeline was loaded from.
    File hashes are cached by (path, size, mtime), so a multi-GB model is read once, not per load.
    """
    if ref.kind == "single_file":
        files = [Path(ref.location)]
        root = files[0].parent
    else:
        root = Path(ref.location) if ref.kind != "hub" else _hub_snapshot(ref.location)
        # the model's own components only: a builtin model's ControlNets and LoRAs are separate files
        extras = ("loras", "controlnet-")
        files = sorted(p for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES
                       and not p.relative_to(root).parts[0].startswith(extras))
    cache_file = Path(os.environ.get("SDWIDGETS_CACHE", "~/.cache/sdwidgets")).expanduser() / "file-hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    h = hashlib.sha256()
    for f in files:
        stat = f.stat()
        key = f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in cache:
            cache[key] = file_sha256(f)
        h.update(f"{f.relative_to(root)}:{cache[key]}".encode())
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache))
    except OSError:
        pass   # a read-only home only costs re-hashing next time
    return h.hexdigest()


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, local_files_only=True))


def dtype_kwargs(dtype) -> dict:
    """`dtype=` for diffusers that renamed it (torch_dtype is deprecated there), else `torch_dtype=`."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def load_pipeline(ref: ModelRef, *, torch_dtype, safety_checker: bool = True):
    """Load a text-to-image pipeline for `ref` (AutoPipeline picks SD1/2, SDXL, SD3, ...).

    Local files that fail to load (truncated weights, broken JSON, a config of wrong types) are a
    ModelLoadError naming the model, not a traceback from deep inside diffusers.
    """
    import torch

    try:
        return _load_pipeline(ref, torch_dtype=torch_dtype, safety_checker=safety_checker)
    except (ParamError, MemoryError, torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if ref.kind == "hub":
            raise
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"model {ref.name!r}: cannot load {ref.location!r} ({type(exc).__name__}: {detail}); "
                             "the files look damaged or incomplete") from None


def _load_pipeline(ref: ModelRef, *, torch_dtype, safety_checker: bool = True):
    import diffusers

    extra = {} if safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    if ref.kind == "single_file":
        cls = _single_file_class(Path(ref.location))
        return cls.from_single_file(ref.location, **dtype_kwargs(torch_dtype), **extra)
    try:
        return diffusers.AutoPipelineForText2Image.from_pretrained(ref.location, **dtype_kwargs(torch_dtype), **extra)
    except OSError as exc:
        if ref.kind == "hub":
            raise ModelNotFoundError(
                f"model: could not load {ref.location!r} from the Hugging Face Hub ({exc}). "
                "Check the id, your network and `huggingface-cli login` for gated models.") from exc
        raise


def _single_file_class(path: Path):
    """Pick the pipeline class of an original-format checkpoint from its tensor names."""
    import diffusers

    keys: set[str] = set()
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    if any(k.startswith("model.diffusion_model.joint_blocks") for k in keys):
        return diffusers.StableDiffusion3Pipeline
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        return diffusers.StableDiffusionXLPipeline
    return diffusers.StableDiffusionPipeline


def builtin_assets(ref: ModelRef) -> Path | None:
    """The asset folder of a builtin model (ControlNets, LoRAs, preview factors), if any."""
    return Path(ref.location) if ref.kind == "builtin" else None
