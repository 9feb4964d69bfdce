"""Training: the shapes world, the embedded model's recipe, and LoRA training for users."""
from __future__ import annotations


def train_lora(*args, **kwargs):
    """Train a LoRA; see :func:`sdwidgets.training.lora.train_lora` (imported lazily)."""
    from .lora import train_lora as _train_lora

    return _train_lora(*args, **kwargs)


__all__ = ["train_lora"]
