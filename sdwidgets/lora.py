"""LoRA files: registration (name -> file, no torch), loading into a pipeline once, strengths per run.

Strengths are applied with diffusers' `set_adapters` (peft scaling), so moving a
slider costs microseconds and never reloads anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ParamError, UnsafeModelError
from .models import PICKLE_SUFFIXES


@dataclass(frozen=True)
class LoraInfo:
    name: str
    path: Path
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def trigger_words(self) -> list[str]:
        # ours (sdwidgets.trigger_words), civitai-style trigger_words, else kohya's caption tag counts
        words = self.metadata.get("sdwidgets.trigger_words") or self.metadata.get("trigger_words") or []
        if not words and self.metadata.get("ss_tag_frequency"):
            return _kohya_tags(self.metadata["ss_tag_frequency"])
        if isinstance(words, str):
            try:
                words = json.loads(words)
            except json.JSONDecodeError:
                words = [w.strip() for w in words.split(",") if w.strip()]
        return list(words) if isinstance(words, (list, tuple)) else list(words.keys()) if isinstance(words, dict) else []


def _kohya_tags(frequency, top: int = 5) -> list[str]:
    """kohya's ss_tag_frequency: {dataset folder: {tag: count}} -> the most frequent tags."""
    if isinstance(frequency, str):
        try:
            frequency = json.loads(frequency)
        except json.JSONDecodeError:
            return []
    counts: dict[str, int] = {}
    for tags in (frequency.values() if isinstance(frequency, dict) else []):
        for tag, n in (tags.items() if isinstance(tags, dict) else []):
            if isinstance(n, (int, float)):
                counts[str(tag).strip()] = counts.get(str(tag).strip(), 0) + int(n)
    return sorted(counts, key=lambda t: (-counts[t], t))[:top]


def lora_shapes(path) -> dict:
    """Tensor name -> shape from a safetensors header (no weights read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def lora_info(path, name: str | None = None, *, allow_unsafe: bool = False) -> LoraInfo:
    """Check a LoRA file and read its metadata (safetensors header only; no weights are read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ParamError(f"lora: no such file: {str(path)!r}")
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_unsafe:
        raise UnsafeModelError(f"lora: {path.name} is a pickled file; loading it can run arbitrary code. "
                               "Use a .safetensors LoRA, or pass allow_unsafe=True if you trust its source.")
    metadata = {}
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
        for key, value in list(metadata.items()):
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    metadata[key] = json.loads(value)
                except json.JSONDecodeError:
                    pass
    name = name or path.stem
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ParamError(f"lora: name must be letters, digits, '-' or '_', got {name!r}")
    return LoraInfo(name, path.resolve(), metadata)


def bundled_loras(asset_dir: Path | None) -> dict[str, LoraInfo]:
    """LoRAs shipped with a builtin model (assets/<model>/loras/*.safetensors)."""
    if asset_dir is None or not (asset_dir / "loras").is_dir():
        return {}
    return {p.stem: lora_info(p) for p in sorted((asset_dir / "loras").glob("*.safetensors"))}


def apply_strengths(pipe, loaded: set[str], wanted: tuple[tuple[str, float], ...]) -> None:
    """Activate exactly the wanted adapters at their strengths; disable LoRA when none are wanted."""
    if not loaded:
        return
    if wanted:
        pipe.enable_lora()
        pipe.set_adapters([n for n, _ in wanted], adapter_weights=[s for _, s in wanted])
    else:
        pipe.disable_lora()
