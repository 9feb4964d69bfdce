"""Upper limits on what one request may ask for, checked before anything is allocated.

They guard against typos and crafted input (a 100000x100000 image, a sweep of 300 million
seeds), not against real work: each one names the environment variable that lifts it.
"""
from __future__ import annotations

import os

from .errors import ParamError

# name -> (default, environment variable that overrides it, what it limits)
LIMITS = {
    "side": (4096, "SDW_MAX_SIDE", "pixels of width or height"),
    "steps": (500, "SDW_MAX_STEPS", "denoising steps"),
    "images": (64, "SDW_MAX_IMAGES", "images per run"),
    "sweep_values": (10_000, "SDW_MAX_SWEEP_VALUES", "values in one --sweep"),
}


def limit(name: str) -> int:
    """The current limit (the environment variable wins when it holds a positive integer)."""
    default, env, _ = LIMITS[name]
    text = os.environ.get(env, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ParamError(f"{env} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise ParamError(f"{env} must be a positive integer, got {text!r}")
        return value
    return default


def check_limit(name: str, field: str, value: int) -> None:
    """ParamError naming the field, the limit and how to lift it when value is above it."""
    top = limit(name)
    if value > top:
        _, env, what = LIMITS[name]
        raise ParamError(f"{field} must be <= {top} ({what}), got {value}; this limit guards against typos, "
                         f"lift it with the environment variable {env}=N")
