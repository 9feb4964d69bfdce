"""The everyday generation modes beyond txt2img/img2img (issue 25), one module each.

    variation.py   variation seeds: subseed + subseed_strength (slerp of the two noises)
    prompts.py     prompt syntax: plain (with a truncation warning), a1111 and compel weighting, long prompts
    inpaint.py     inpainting: mask_image, mask_blur, "only masked" padding, paste-back through the blurred mask
    hires.py       Hires. fix: base size, upscale (Lanczos or latent), img2img pass
    detail.py      detail pass (ADetailer's idea): detected regions inpainted at full resolution
    wildcards.py   {red|green|blue} combinations (dynamicprompts) for the %%sd magic

Each mode adds validated fields to GenerationParams (fields.py holds their checks and their
log / A1111 infotext names) and joins Session through three narrow hooks, below: the
pipeline class, the arguments of one pipeline call, and a pass after it. No torch at import.
"""
from __future__ import annotations

from . import detail, hires, inpaint, prompts, variation


def check(session, params) -> None:
    """What needs the session to check, before any model work (the detail pass's detector)."""
    detail.check(session, params)


def pipeline_kind(params) -> str | None:
    """'inpaint' when the run needs an inpainting pipeline (from_pipe on the loaded one), else None."""
    return "inpaint" if params.mask_image is not None else None


def prepare_call(pipe, params, call: dict, run) -> dict:
    """The arguments of one pipeline call, with every mode's additions (latents, embeds, mask)."""
    call = variation.prepare(pipe, params, call)
    call = prompts.prepare(pipe, params, call, run)
    call = inpaint.prepare(params, call)
    return hires.prepare(params, call)


def finish(session, loaded, params, call: dict, images, seed: int):
    """Images of one pipeline call after the passes that follow it (Hires. fix, inpaint paste-back, detail)."""
    images = hires.finish(session, loaded, params, call, images, seed)
    images = inpaint.finish(params, call, images)
    return detail.finish(session, loaded, params, call, images, seed)
