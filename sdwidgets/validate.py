"""The checks every front-end shares: numbers (given as values or typed as text) and images.

One place, so GenerationParams, Control, sweeps and the `%%sd` option line refuse the same
values with the same words, each naming the field and what it accepts.
"""
from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path
from typing import Any

from .errors import ParamError


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum]; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParamError(f"{name} must be an integer, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParamError(f"{name} must be {_range(minimum, maximum)}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """`value` as a finite float in [lo, hi]; NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParamError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ParamError(f"{name} must be a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ParamError(f"{name} must be {_range(lo, hi)}, got {value!r}")
    return float(value)


def parse_int(text: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer typed as text (an option value, a sweep value), checked like check_int."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ParamError(f"{name} must be an integer, got {text!r}") from None
    return check_int(name, value, minimum, maximum)


def parse_number(text: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    """A number typed as text, checked like check_number."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ParamError(f"{name} must be a number, got {text!r}") from None
    return check_number(name, value, lo, hi)


def close_matches(word: Any, choices, n: int = 3) -> list[str]:
    """The valid spellings closest to a mistyped `word` (case-insensitive), best first: near
    misspellings, and valid names that start the word (`--cfg-scale` -> `--cfg`)."""
    import difflib

    if not isinstance(word, str) or not word.strip():
        return []
    typed = word.strip().lower()
    by_lower = {str(c).lower(): str(c) for c in choices}
    near = difflib.get_close_matches(typed, list(by_lower), n=n, cutoff=0.75)
    starts = [c for c in by_lower if len(c.strip("-")) >= 3 and typed.startswith(c) and c not in near]
    return [by_lower[c] for c in near + sorted(starts, key=len, reverse=True)][:n]


def did_you_mean(word: Any, choices, everything: str | None = None) -> str:
    """'did you mean 'Euler'?' for a near miss, else the accepted values (`everything`, or all of them)."""
    matches = close_matches(word, choices)
    if matches:
        return "did you mean " + " or ".join(repr(m) for m in matches) + "?"
    return "choose one of: " + (everything if everything is not None else ", ".join(map(str, choices)))


def load_image(value: Any, field_name: str):
    """A PIL RGB image from a PIL image, numpy array or path; ParamError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if hasattr(value, "__array__") and not isinstance(value, (str, Path)):
        import numpy as np

        arr = np.asarray(value)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ParamError(f"{field_name}: no such image file: {str(path)!r}")
        try:
            with warnings.catch_warnings():     # a decompression bomb is refused, not half-decoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    return im.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ParamError(f"{field_name}: {str(path)!r} is too large to decode safely ({exc})") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ParamError(f"{field_name}: cannot read {str(path)!r} as an image ({exc})") from None
    raise ParamError(f"{field_name} must be a PIL image, a numpy array or an image path, got {type(value).__name__}")
