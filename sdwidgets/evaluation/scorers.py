"""Built-in scorers: functions `(image, params) -> float` (higher is better).

- `adherence`: the embedded model's analyser (sdwidgets.training.analyse) reads colour, shape,
  position and size off the pixels; the score is the fraction of what the prompt names that the
  image shows. Offline, exact for the `shapes` world, meaningless for other models.
- `sharpness`, `colourfulness`: image statistics that need no weights.
- `ClipScore`: CLIP image-text similarity through transformers, from locally available weights
  only (never downloaded); a one-line error says so when they are missing.

A scorer may instead take a whole batch: give it an attribute `batch = True` and it is called
as `fn(images, params_list) -> list of numbers`.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import ParamError

_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
_SHAPES = ("circle", "square", "triangle", "ring")
_POSITIONS = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom",
              "in the center": "center"}


def prompt_targets(prompt: str) -> dict:
    """What a prompt of the embedded model's grammar names: fg, shape, bg, position, size (those present)."""
    text = " ".join(str(prompt).lower().split())
    out = {}
    bg = re.search(r"on an? (\w+) background", text)
    if bg and bg.group(1) in _COLOURS:
        out["bg"] = bg.group(1)
        text = text[:bg.start()] + text[bg.end():]
    for phrase, where in _POSITIONS.items():
        if phrase in text:
            out["position"] = where
            text = text.replace(phrase, " ")
    words = text.split()
    for w in words:
        if w in _COLOURS and "fg" not in out:
            out["fg"] = w
        elif w in _SHAPES and "shape" not in out:
            out["shape"] = w
        elif w in ("small", "large") and "size" not in out:
            out["size"] = w
    return out


def adherence(image, params=None) -> float:
    """Fraction of the prompt's named attributes (colour, shape, background, position, size) the
    image shows, read by the embedded model's analyser; NaN for a prompt that names none."""
    from ..training.analyse import analyse

    prompt = params.prompt if hasattr(params, "prompt") else (params or {}).get("prompt", "")
    targets = prompt_targets(prompt)
    if not targets:
        return float("nan")
    reading = analyse(image)
    checks = {"fg": lambda v: reading.fg == v, "bg": lambda v: reading.bg == v,
              "shape": lambda v: reading.shape == v, "size": lambda v: reading.size == v,
              "position": lambda v: reading.shape is not None and reading.at(v)}
    return float(np.mean([checks[k](v) for k, v in targets.items()]))


def sharpness(image, params=None) -> float:
    """Variance of the Laplacian of the grey image (blur lowers it); no weights needed."""
    import cv2

    grey = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def colourfulness(image, params=None) -> float:
    """Hasler and Suesstrunk's colourfulness (2003): spread and mean of the rg and yb opponent channels."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    rg = a[..., 0] - a[..., 1]
    yb = 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


class ClipScore:
    """CLIP score (100 x cosine of image and prompt embeddings, floored at 0) with transformers.

    `model` is a local folder or a hub id already in the local cache: nothing is downloaded.
    """

    batch = True

    def __init__(self, model: str = "openai/clip-vit-base-patch32", device: str = "cpu"):
        self.model_id, self.device = model, device
        self._model = self._processor = None

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import CLIPModel, CLIPProcessor

        try:
            self._model = CLIPModel.from_pretrained(self.model_id, local_files_only=True).to(self.device).eval()
            self._processor = CLIPProcessor.from_pretrained(self.model_id, local_files_only=True)
        except (OSError, ValueError) as exc:
            self._model = None
            raise ParamError(f"CLIP score needs the weights of {self.model_id!r} on this machine (a local folder or "
                             f"the Hugging Face cache) and they are not there; nothing is downloaded "
                             f"({type(exc).__name__}). Pass ClipScore(model=FOLDER) or use the adherence/sharpness "
                             "scorers") from None

    def __call__(self, images, params_list) -> list[float]:
        import torch

        self.load()
        prompts = [p.prompt if hasattr(p, "prompt") else p.get("prompt", "") for p in params_list]
        inputs = self._processor(text=prompts, images=[im.convert("RGB") for im in images], return_tensors="pt",
                                 padding=True, truncation=True).to(self.device)
        with torch.no_grad():
            out = self._model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        return [float(max(100.0 * c, 0.0)) for c in (img * txt).sum(-1).tolist()]


BUILTIN = {"adherence": adherence, "sharpness": sharpness, "colourfulness": colourfulness}


def resolve_scorers(scorers, reserved=()) -> dict:
    """{name: callable} from a dict, a list of built-in names/callables, or None (all built-ins that need no
    weights); names must be identifiers not in `reserved` (the log's columns)."""
    from .store import check_score_name

    if scorers is None:
        return dict(BUILTIN)
    if isinstance(scorers, str):
        scorers = [scorers]
    if not isinstance(scorers, dict):
        out = {}
        for item in scorers:
            if isinstance(item, str):
                if item == "clip":
                    out["clip"] = ClipScore()
                elif item in BUILTIN:
                    out[item] = BUILTIN[item]
                else:
                    raise ParamError(f"scorers: unknown scorer {item!r}; built-in: {', '.join([*BUILTIN, 'clip'])}, "
                                     "or pass {name: function}")
            elif callable(item):
                out[getattr(item, "__name__", type(item).__name__)] = item
            else:
                raise ParamError(f"scorers: expected names or functions, got {type(item).__name__}")
        scorers = out
    for name, fn in scorers.items():
        check_score_name(name, reserved)
        if not callable(fn):
            raise ParamError(f"scorers: {name!r} is not callable (a function (image, params) -> number)")
    return dict(scorers)
