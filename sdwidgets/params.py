"""GenerationParams: the single, validated description of a run.

Validation happens here, before any model work, so a bad call never touches the
model or the log. Params serialise to a plain dict (the log, the PNG JSON chunk)
and to AUTOMATIC1111 "parameters" text (what other Stable Diffusion tools read).
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ParamError, ParamWarning
from .limits import check_limit
from .modes import fields as mode_fields
from .schedulers import SAMPLER_NAMES, check_sampler
from .validate import check_int, check_number, load_image

INFOTEXT_KEY = "parameters"      # A1111's PNG text chunk
JSON_KEY = "sdwidgets"           # our full-fidelity chunk


@dataclass(frozen=True, eq=False)
class GenerationParams:
    """Everything that determines a run. Construct it and it is validated."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 20
    guidance_scale: float = 5.0
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    num_images: int = 1
    batch_size: int | None = None        # images per pipeline call (None: all in one call)
    model: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    controls: tuple = ()                 # tuple[Control, ...]
    init_image: Any = None               # PIL.Image after validation
    strength: float | None = None
    # modes (sdwidgets/modes, checked in modes.fields): variation seeds, prompt syntax, inpainting, Hires. fix
    subseed: int | None = None
    subseed_strength: float = 0.0
    prompt_syntax: str | None = None     # plain | a1111 | compel (None: the session's)
    mask_image: Any = None               # PIL "L" image after validation; white = repaint
    mask_blur: int | None = None         # pixels (default 4 with a mask)
    inpaint_padding: int | None = None   # "only masked" at full resolution with this padding (None: whole picture)
    hires_scale: float | None = None
    hires_steps: int | None = None       # None: the same as steps
    hires_strength: float | None = None  # default 0.7 with hires_scale
    hires_upscaler: str | None = None    # Lanczos | Latent (default Lanczos)
    detail: Any = None                   # modes.detail.DetailPass (from a dict), None: no detail pass

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        # 1. Text
        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ParamError(f"{name} must be a string, got {type(value).__name__}")
            set_(name, value)
        # 2. Numbers
        if self.seed is not None:
            set_("seed", check_int("seed", self.seed, 0))
            if self.seed >= 2**63:
                raise ParamError(f"seed must be < 2**63, got {self.seed}")
        set_("steps", check_int("steps", self.steps, 1))
        check_limit("steps", "steps", self.steps)
        set_("guidance_scale", check_number("guidance_scale", self.guidance_scale, 0.0))
        set_("num_images", check_int("num_images", self.num_images, 1))
        check_limit("images", "num_images", self.num_images)
        if self.seed is not None and self.seed + self.num_images - 1 >= 2**63:
            raise ParamError(f"seed + num_images - 1 must be < 2**63 (image i uses seed + i), got seed {self.seed} "
                             f"with {self.num_images} images; use a seed below {2**63 - self.num_images + 1}")
        if self.batch_size is not None:
            set_("batch_size", check_int("batch_size", self.batch_size, 1))
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                value = check_int(name, value, 8)
                if value % 8:
                    raise ParamError(f"{name} must be a multiple of 8, got {value} (try {value // 8 * 8} or {value // 8 * 8 + 8})")
                check_limit("side", name, value)
                set_(name, value)
        # 3. Sampler
        if self.scheduler is not None:
            set_("scheduler", check_sampler(self.scheduler))
        # 4. Model: a name or path; whether it exists is checked by models.resolve
        if self.model is not None and not isinstance(self.model, (str, Path)):
            raise ParamError(f"model must be a string (alias, folder, file or hub id), got {type(self.model).__name__}")
        if self.model is not None:
            set_("model", str(self.model))
        # 5. LoRAs: {"name": strength} or pairs, plus A1111's <lora:name:weight> in the prompts
        loras = self._normalise_loras(self.loras)
        for name in ("prompt", "negative_prompt"):
            text, tagged = prompt_loras(getattr(self, name))
            set_(name, text)
            loras = _merge_loras(loras, tagged)
        set_("loras", loras)
        # 6. Controls
        set_("controls", self._normalise_controls(self.controls))
        # 7. img2img
        if self.init_image is not None:
            set_("init_image", load_image(self.init_image, "init_image"))
            set_("strength", check_number("strength", 0.75 if self.strength is None else self.strength, 0.0, 1.0))
        elif self.strength is not None:
            check_number("strength", self.strength, 0.0, 1.0)
            raise ParamError("strength only applies with init_image (image-to-image); pass init_image or drop strength")
        # 8. Modes
        mode_fields.check(self, set_)

    @staticmethod
    def _normalise_loras(loras) -> tuple[tuple[str, float], ...]:
        if not loras:
            return ()
        items = loras.items() if isinstance(loras, dict) else loras
        out = []
        for item in items:
            try:
                name, strength = item
            except (TypeError, ValueError):
                raise ParamError(f"loras must be a dict {{name: strength}}, got {loras!r}") from None
            if not isinstance(name, str) or not name:
                raise ParamError(f"loras: names must be non-empty strings, got {name!r}")
            out.append((name, check_number(f"loras[{name!r}]", strength, -4.0, 4.0)))
        return tuple(out)

    @staticmethod
    def _normalise_controls(controls) -> tuple:
        from .controlnet import Control

        if not controls:
            return ()
        if isinstance(controls, Control):
            controls = [controls]
        out = []
        for c in controls:
            if not isinstance(c, Control):
                raise ParamError(f"controls must be a list of sdw.Control, got {type(c).__name__}")
            out.append(c)
        return tuple(out)

    # ---- derived ------------------------------------------------------------------
    @property
    def task(self) -> str:
        """Which pipeline family runs this: txt2img, img2img, inpaint, controlnet, controlnet-img2img, ..."""
        if self.mask_image is not None:
            return "controlnet-inpaint" if self.controls else "inpaint"
        if self.controls:
            return "controlnet-img2img" if self.init_image is not None else "controlnet"
        return "img2img" if self.init_image is not None else "txt2img"

    @property
    def batches(self) -> list[int]:
        """Images per pipeline call, in order: the batch layout (image i used seed + i). Variation
        seeds, Hires. fix and the detail pass work image by image, so they make one per call."""
        if self.subseed_strength or self.hires_scale or self.detail:
            return [1] * self.num_images
        size = min(self.batch_size or self.num_images, self.num_images)
        return [min(size, self.num_images - start) for start in range(0, self.num_images, size)]

    def replace(self, **changes) -> "GenerationParams":
        return dataclasses.replace(self, **changes)

    # ---- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready dict. Images are referenced by sha256 (the log stores the files)."""
        from .images import image_sha256

        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "width": self.width,
            "height": self.height,
            "scheduler": self.scheduler,
            "num_images": self.num_images,
            "batch_size": self.batch_size,
            "model": self.model,
            "loras": dict(self.loras),
            "controls": [c.to_dict() for c in self.controls],
            "init_image_sha256": image_sha256(self.init_image) if self.init_image is not None else None,
            "strength": self.strength,
            **mode_fields.to_dict(self),
        }

    @classmethod
    def from_dict(cls, data: dict, images: dict | None = None) -> "GenerationParams":
        """Inverse of to_dict; `images` maps sha256 -> PIL image (or path) for init/control images."""
        from .controlnet import Control

        images = images or {}
        data = dict(data)
        data.setdefault("batch_size", 1)    # records from before batching made one image per call
        init_sha = data.pop("init_image_sha256", None)
        mask_sha = data.pop("mask_image_sha256", None)
        if mask_sha and mask_sha not in images:
            raise ParamError(f"mask_image: image {mask_sha[:12]} is not stored with this record")
        controls = [Control.from_dict(c, images) for c in data.pop("controls", [])]
        init = None
        if init_sha:
            if init_sha not in images:
                raise ParamError(f"init_image: image {init_sha[:12]} is not stored with this record")
            init = images[init_sha]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}, controls=controls, init_image=init,
                   mask_image=images[mask_sha] if mask_sha else None)

    def infotext(self, *, sampler: str, width: int, height: int, model_name: str = "", model_hash: str = "") -> str:
        """AUTOMATIC1111 'parameters' text: prompt, Negative prompt line, then key: value pairs."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        fields = {
            "Steps": self.steps,
            "Sampler": sampler,
            "CFG scale": f"{self.guidance_scale:g}",
            "Seed": self.seed,
            "Size": f"{width}x{height}",
            "Model hash": model_hash[:10] if model_hash else None,
            "Model": model_name or None,
            "Denoising strength": f"{self.strength:g}" if self.strength is not None else None,
            "Lora weights": ", ".join(f"{n}: {s:g}" for n, s in self.loras) or None,
        }
        fields.update(mode_fields.infotext(self))
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v is not None))
        return "\n".join(lines)

    @classmethod
    def from_infotext(cls, text: str) -> "GenerationParams":
        """Parse A1111 'parameters' text (as written by A1111, Forge or us); a ParamWarning names what is left out."""
        fields, prompt, negative = parse_infotext(text)
        ignored = [k for k in fields if k not in _INFOTEXT_READ]
        if ignored:
            warnings.warn(f"not imported (no equivalent here): {', '.join(ignored)}", ParamWarning, stacklevel=2)
        return cls(prompt=prompt, negative_prompt=negative, **infotext_settings(fields))

    @classmethod
    def from_png(cls, path) -> "GenerationParams":
        """Read params from an image: ours (JSON chunk), A1111/Forge (PNG text or JPEG/WebP EXIF),
        ComfyUI, InvokeAI, NovelAI, Fooocus (see sdwidgets.image_import).

        Init and control images are found next to the log (inputs/) when the PNG is ours.
        """
        from .image_import import read_params

        return read_params(path, cls)


_LORA_TAG = re.compile(r"<lora:([^:<>]*)(?::([^:<>]*))?(?::[^<>]*)?>", re.IGNORECASE)


def prompt_loras(text: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """Remove AUTOMATIC1111 `<lora:name:weight>` tags (weight 1 if left out) from a prompt.

    Returns the prompt without them (spaces tidied) and the (name, strength) pairs found.
    """
    found = []
    for match in _LORA_TAG.finditer(text):
        name, weight = match.group(1).strip(), (match.group(2) or "1").strip()
        if not name:
            raise ParamError(f"prompt: {match.group(0)!r} has no LoRA name; write <lora:name:0.8>")
        try:
            strength = float(weight)
        except ValueError:
            raise ParamError(f"prompt: {match.group(0)!r}: the weight must be a number, got {weight!r}") from None
        found.append((name, check_number(f"loras[{name!r}]", strength, -4.0, 4.0)))
    if not found:
        return text, ()
    cleaned = _LORA_TAG.sub(" ", text)
    cleaned = re.sub(r",(\s*,)+", ",", re.sub(r"\s+,", ",", cleaned))     # "a, <lora:x>, b" -> "a, b"
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip().strip(",").strip()
    return cleaned, tuple(found)


def _merge_loras(given: tuple, tagged: tuple) -> tuple:
    merged = dict(given)
    for name, strength in tagged:
        if name in merged and merged[name] != strength:
            raise ParamError(f"loras: {name!r} is given twice with different strengths ({merged[name]:g} and "
                             f"{strength:g}, from <lora:{name}:...> in the prompt); keep one")
        merged[name] = strength
    return tuple(merged.items())


def infotext_settings(fields: dict) -> dict:
    """GenerationParams keyword arguments from A1111 fields (see parse_infotext).

    Lenient: a field that does not parse, or a sampler we do not know, is left out with a
    ParamWarning; a size that is not a multiple of 8 is rounded to the nearest one (warned).
    """
    from .image_import import nearest_multiple_of_8

    readers = {
        "Seed": lambda v: {"seed": int(v)},
        "Steps": lambda v: {"steps": int(v)},
        "CFG scale": lambda v: {"guidance_scale": float(v)},
        "Size": lambda v: {name: nearest_multiple_of_8(int(x), name, "Size") for name, x in
                           zip(("width", "height"), v.split("x", 1))},
        "Model": lambda v: {"model": v},
        "Denoising strength": lambda v: {},     # only meaningful with the init image, which A1111 text lacks
        "Lora weights": lambda v: {"loras": {name.strip(): float(strength) for name, _, strength in
                                             (p.rpartition(":") for p in v.split(",") if p.strip())}},
    }
    settings = {}
    for key, read in readers.items():
        if key in fields:
            try:
                settings.update(read(fields[key]))
            except ValueError:
                warnings.warn(f"{key}: {str(fields[key])[:40]!r} does not parse; left out", ParamWarning, stacklevel=3)
    for key, read in mode_fields.READERS.items():     # the modes' fields read all fields (a pass reads its strength)
        if key in fields:
            try:
                settings.update(read(fields))
            except ValueError:
                warnings.warn(f"{key}: {str(fields[key])[:40]!r} does not parse; left out", ParamWarning, stacklevel=3)
    sampler = fields.get("Sampler")
    schedule = fields.get("Schedule type")
    if sampler and schedule == "Karras" and "Karras" not in sampler:
        sampler = f"{sampler} Karras"   # A1111 >= 1.9 writes the schedule separately
    elif schedule and schedule not in ("Karras", "Automatic"):
        warnings.warn(f"Schedule type {schedule!r} is not mapped; {sampler or 'the sampler'} uses its default schedule",
                      ParamWarning, stacklevel=3)
    if sampler in SAMPLER_NAMES:
        settings["scheduler"] = sampler
    elif sampler:
        warnings.warn(f"Sampler {sampler!r} has no equivalent here; the model's default sampler is used",
                      ParamWarning, stacklevel=3)
    return settings


_INFOTEXT_READ = {"Seed", "Steps", "CFG scale", "Size", "Model", "Model hash", "Denoising strength", "Lora weights",
                  "Sampler", "Schedule type", "Version"}


def _quote(value) -> str:
    text = str(value)
    return json.dumps(text) if ("," in text or ":" in text) else text


_FIELD_RE = re.compile(r'\s*([\w ][\w \-/]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse_infotext(text: str) -> tuple[dict, str, str]:
    """Split A1111 text into (fields, prompt, negative prompt)."""
    lines = text.strip().split("\n")
    last = lines[-1] if len(lines) > 1 or "Steps:" in lines[-1] else ""
    fields = {}
    if "Steps:" in last:
        lines = lines[:-1]
        for key, value in _FIELD_RE.findall(last):
            value = value.strip()
            if value.startswith('"'):
                try:
                    value = json.loads(value)
                except ValueError:      # quoted by hand, not JSON: keep the text between the quotes
                    value = value.strip('"')
            fields[key.strip()] = value
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return fields, "\n".join(prompt).strip(), "\n".join(negative).strip()

