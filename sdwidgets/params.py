"""GenerationParams: the single, validated description of a run.

Validation happens here, before any model work, so a bad call never touches the
model or the log. Params serialise to a plain dict (the log, the PNG JSON chunk)
and to AUTOMATIC1111 "parameters" text (what other Stable Diffusion tools read).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ParamError
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
        set_("guidance_scale", check_number("guidance_scale", self.guidance_scale, 0.0))
        set_("num_images", check_int("num_images", self.num_images, 1))
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                value = check_int(name, value, 8)
                if value % 8:
                    raise ParamError(f"{name} must be a multiple of 8, got {value} (try {value // 8 * 8} or {value // 8 * 8 + 8})")
                set_(name, value)
        # 3. Sampler
        if self.scheduler is not None:
            set_("scheduler", check_sampler(self.scheduler))
        # 4. Model: a name or path; whether it exists is checked by models.resolve
        if self.model is not None and not isinstance(self.model, (str, Path)):
            raise ParamError(f"model must be a string (alias, folder, file or hub id), got {type(self.model).__name__}")
        if self.model is not None:
            set_("model", str(self.model))
        # 5. LoRAs: {"name": strength} or pairs
        set_("loras", self._normalise_loras(self.loras))
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
        """Parse A1111 'parameters' text (as written by A1111, Forge or us)."""
        fields, prompt, negative = parse_infotext(text)
        return cls(prompt=prompt, negative_prompt=negative, **infotext_settings(fields))

    @classmethod
    def from_png(cls, path) -> "GenerationParams":
        """Read params back from one of our PNGs (JSON chunk) or any A1111-style PNG (infotext).

        Init and control images are found next to the log (inputs/) when the PNG is ours.
        """
        from PIL import Image

        path = Path(path)
        with Image.open(path) as im:
            text = dict(im.text) if hasattr(im, "text") else dict(im.info)
        if JSON_KEY in text:
            data = json.loads(text[JSON_KEY])["params"]
            from .images import stored_inputs

            return cls.from_dict(data, stored_inputs(path.parent.parent / "inputs"))
        if INFOTEXT_KEY in text:
            return cls.from_infotext(text[INFOTEXT_KEY])
        raise ParamError(f"{path}: no generation parameters found (no '{INFOTEXT_KEY}' or '{JSON_KEY}' text chunk)")


def infotext_settings(fields: dict) -> dict:
    """GenerationParams keyword arguments from A1111 fields (see parse_infotext).

    Lenient: a field that does not parse, or a sampler we do not know, is left out.
    """
    readers = {
        "Seed": lambda v: {"seed": int(v)},
        "Steps": lambda v: {"steps": int(v)},
        "CFG scale": lambda v: {"guidance_scale": float(v)},
        "Size": lambda v: dict(zip(("width", "height"), (int(x) for x in v.split("x", 1)))),
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
                pass
    for key, read in mode_fields.READERS.items():     # the modes' fields read all fields (a pass reads its strength)
        if key in fields:
            try:
                settings.update(read(fields))
            except ValueError:
                pass
    sampler = fields.get("Sampler")
    if sampler and fields.get("Schedule type") == "Karras" and "Karras" not in sampler:
        sampler = f"{sampler} Karras"   # A1111 >= 1.9 writes the schedule separately
    if sampler in SAMPLER_NAMES:
        settings["scheduler"] = sampler
    return settings


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
                value = json.loads(value)
            fields[key.strip()] = value
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return fields, "\n".join(prompt).strip(), "\n".join(negative).strip()

