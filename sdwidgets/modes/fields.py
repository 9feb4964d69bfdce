"""The GenerationParams fields of the modes: their checks, their log entries, their A1111 names.

GenerationParams calls `check` from __post_init__ (before any model work), `to_dict` for the
log and the PNG JSON chunk, `infotext` for the A1111 "parameters" text and `READERS` to read
that text back. Names follow AUTOMATIC1111's infotext so other tools read our images.
"""
from __future__ import annotations

import dataclasses

from ..errors import ParamError
from ..validate import check_int, check_number, load_image

PROMPT_SYNTAXES = ("plain", "a1111", "compel")
HIRES_UPSCALERS = ("Lanczos", "Latent")
DEFAULT_HIRES_STRENGTH = 0.7      # A1111's default denoising strength for Hires. fix
DEFAULT_MASK_BLUR = 4             # A1111's default


def check(p, set_) -> None:
    """Validate and normalise the mode fields of GenerationParams `p` (set_ writes a field)."""
    # Variation seeds
    if p.subseed is not None:
        set_("subseed", check_int("subseed", p.subseed, 0))
        if p.subseed >= 2**63:
            raise ParamError(f"subseed must be < 2**63, got {p.subseed}")
    set_("subseed_strength", check_number("subseed_strength", p.subseed_strength, 0.0, 1.0))
    if p.subseed_strength and p.subseed is None:
        raise ParamError("subseed_strength needs subseed (the seed whose noise is mixed in)")
    if p.subseed_strength and p.init_image is not None:
        raise ParamError("subseed/subseed_strength apply to text-to-image only (the noise of an init image run "
                         "is drawn by the pipeline); drop init_image or the variation seed")
    # Prompt syntax
    if p.prompt_syntax is not None and p.prompt_syntax not in PROMPT_SYNTAXES:
        raise ParamError(f"prompt_syntax must be one of {', '.join(PROMPT_SYNTAXES)}, got {p.prompt_syntax!r}")
    # Inpainting
    if p.mask_image is not None:
        if p.init_image is None:
            raise ParamError("mask_image needs init_image (the picture to inpaint); white in the mask is repainted")
        set_("mask_image", load_image(p.mask_image, "mask_image").convert("L"))
        set_("mask_blur", check_int("mask_blur", DEFAULT_MASK_BLUR if p.mask_blur is None else p.mask_blur, 0, 64))
        if p.inpaint_padding is not None:
            set_("inpaint_padding", check_int("inpaint_padding", p.inpaint_padding, 0, 1024))
    else:
        for name in ("mask_blur", "inpaint_padding"):
            if getattr(p, name) is not None:
                raise ParamError(f"{name} only applies with mask_image (inpainting); pass mask_image or drop {name}")
    # Hires. fix
    if p.hires_scale is not None:
        set_("hires_scale", check_number("hires_scale", p.hires_scale, 1.0, 8.0))
        if p.init_image is not None:
            raise ParamError("hires_scale applies to text-to-image only (as in A1111); drop init_image or hires_scale")
        if p.hires_steps is not None:
            set_("hires_steps", check_int("hires_steps", p.hires_steps, 1))
        set_("hires_strength", check_number("hires_strength", DEFAULT_HIRES_STRENGTH if p.hires_strength is None
                                            else p.hires_strength, 0.0, 1.0))
        steps = p.hires_steps or p.steps
        if int(steps * p.hires_strength) < 1:      # the img2img pass runs int(steps * strength) steps
            raise ParamError(f"the Hires. fix pass would run no step: hires_steps ({steps}) x hires_strength "
                             f"({p.hires_strength:g}) < 1; raise either")
        upscaler = "Lanczos" if p.hires_upscaler is None else p.hires_upscaler
        if upscaler not in HIRES_UPSCALERS:
            raise ParamError(f"hires_upscaler must be one of {', '.join(HIRES_UPSCALERS)}, got {upscaler!r}")
        set_("hires_upscaler", upscaler)
    else:
        for name in ("hires_steps", "hires_strength", "hires_upscaler"):
            if getattr(p, name) is not None:
                raise ParamError(f"{name} only applies with hires_scale (Hires. fix); pass hires_scale or drop {name}")


    # Detail pass
    if p.detail is not None:
        from .detail import DetailPass

        set_("detail", DetailPass.from_value(p.detail))
        steps = p.detail.steps or p.steps
        if int(steps * p.detail.strength) < 1:     # the inpainting pass runs int(steps * strength) steps
            raise ParamError(f"the detail pass would run no step: steps ({steps}) x detail strength "
                             f"({p.detail.strength:g}) < 1; raise either")


def to_dict(p) -> dict:
    from ..images import image_sha256

    return {
        "subseed": p.subseed, "subseed_strength": p.subseed_strength, "prompt_syntax": p.prompt_syntax,
        "mask_image_sha256": image_sha256(p.mask_image) if p.mask_image is not None else None,
        "mask_blur": p.mask_blur, "inpaint_padding": p.inpaint_padding,
        "hires_scale": p.hires_scale, "hires_steps": p.hires_steps, "hires_strength": p.hires_strength,
        "hires_upscaler": p.hires_upscaler,
        "detail": dataclasses.asdict(p.detail) if p.detail is not None else None,
    }


def infotext(p) -> dict:
    """A1111 fields of the modes that ran (None: left out of the text)."""
    out = {}
    if p.subseed_strength:
        out.update({"Variation seed": p.subseed, "Variation seed strength": f"{p.subseed_strength:g}"})
    if p.mask_image is not None:
        out["Mask blur"] = p.mask_blur
        if p.inpaint_padding is not None:
            out.update({"Inpaint area": "Only masked", "Masked area padding": p.inpaint_padding})
    if p.hires_scale is not None:
        out.update({"Denoising strength": f"{p.hires_strength:g}", "Hires upscale": f"{p.hires_scale:g}",
                    "Hires steps": p.hires_steps, "Hires upscaler": p.hires_upscaler})
    if p.detail is not None:      # ADetailer's names
        d = p.detail
        out.update({"ADetailer model": d.detector, "ADetailer prompt": d.prompt,
                    "ADetailer negative prompt": d.negative_prompt, "ADetailer denoising strength": f"{d.strength:g}",
                    "ADetailer steps": d.steps, "ADetailer mask blur": d.blur, "ADetailer inpaint padding": d.padding})
    if p.prompt_syntax and p.prompt_syntax != "plain":
        out["Prompt syntax"] = p.prompt_syntax      # ours; A1111 always reads its own syntax
    return out


def _hires(fields: dict) -> dict:
    out = {"hires_scale": float(fields["Hires upscale"])}
    if "Hires steps" in fields and int(fields["Hires steps"]):      # A1111 writes 0 for "same as steps"
        out["hires_steps"] = int(fields["Hires steps"])
    if "Denoising strength" in fields:
        out["hires_strength"] = float(fields["Denoising strength"])
    if fields.get("Hires upscaler") in HIRES_UPSCALERS:
        out["hires_upscaler"] = fields["Hires upscaler"]
    return out


def _detail(fields: dict) -> dict:
    keys = {"ADetailer prompt": ("prompt", str), "ADetailer negative prompt": ("negative_prompt", str),
            "ADetailer denoising strength": ("strength", float), "ADetailer steps": ("steps", int),
            "ADetailer mask blur": ("blur", int), "ADetailer inpaint padding": ("padding", int)}
    return {"detail": {"detector": fields["ADetailer model"],
                       **{name: kind(fields[k]) for k, (name, kind) in keys.items() if k in fields}}}


# A1111 field -> reader of GenerationParams kwargs (given all fields; a ValueError drops the field)
READERS = {
    "Variation seed": lambda f: {"subseed": int(f["Variation seed"]),
                                 "subseed_strength": float(f.get("Variation seed strength", 0))},
    "Hires upscale": _hires,
    "ADetailer model": _detail,
    "Prompt syntax": lambda f: {"prompt_syntax": f["Prompt syntax"]} if f["Prompt syntax"] in PROMPT_SYNTAXES else {},
}
