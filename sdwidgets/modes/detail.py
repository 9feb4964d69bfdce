"""Detail pass (the ADetailer idea): detect regions in each finished image, inpaint each one
at the full resolution of the run ("only masked" with padding), paste it back through a
feathered mask. Off by default; recorded (with the detector's name) so a rerun repeats it.

A detector is a function image -> [(x0, y0, x1, y1), ...] in pixels. "shapes" (the embedded
model's shape, found by its colour blob) is built in; add others per session:
`session.detectors["faces"] = my_face_boxes`, then `detail={"detector": "faces"}`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ParamError
from ..validate import check_int, check_number

DETAIL_KEY = ("detail", ())     # LoadedModel.variants key of the inpainting pipeline of the pass


@dataclass(frozen=True)
class DetailPass:
    detector: str = "shapes"
    prompt: str | None = None          # None: the run's prompt
    negative_prompt: str | None = None
    strength: float = 0.4              # ADetailer's default denoising strength
    steps: int | None = None           # None: the run's steps
    padding: int = 8                   # pixels around each region, cropped and inpainted at full size
    blur: int = 4                      # feather of the paste-back, pixels

    @classmethod
    def from_value(cls, value) -> "DetailPass":
        if isinstance(value, cls):
            value = asdict(value)
        if isinstance(value, str):
            value = {"detector": value}
        if not isinstance(value, dict):
            raise ParamError(f"detail must be a dict like {{'detector': 'shapes', 'strength': 0.4}}, got {value!r}")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ParamError(f"detail: unknown key {sorted(unknown)[0]!r}; keys: {', '.join(cls.__dataclass_fields__)}")
        d = {**asdict(cls()), **value}
        if not isinstance(d["detector"], str) or not d["detector"]:
            raise ParamError(f"detail: detector must be a detector's name, got {d['detector']!r}")
        for name in ("prompt", "negative_prompt"):
            if d[name] is not None and not isinstance(d[name], str):
                raise ParamError(f"detail: {name} must be a string, got {type(d[name]).__name__}")
        d["strength"] = check_number("detail strength", d["strength"], 0.0, 1.0)
        if d["steps"] is not None:
            d["steps"] = check_int("detail steps", d["steps"], 1)
        d["padding"] = check_int("detail padding", d["padding"], 0, 1024)
        d["blur"] = check_int("detail blur", d["blur"], 0, 64)
        return cls(**d)


def shapes_detector(image) -> list[tuple[int, int, int, int]]:
    """The box of the embedded model's shape (its largest colour blob), in image pixels."""
    import numpy as np
    from PIL import Image

    from ..training.analyse import blob_mask
    from ..training.world import SIZE

    blob = blob_mask(image.convert("RGB").resize((SIZE, SIZE), Image.NEAREST))
    if not blob.any():
        return []
    ys, xs = np.nonzero(blob)
    sx, sy = image.width / SIZE, image.height / SIZE
    return [(int(xs.min() * sx), int(ys.min() * sy), int(np.ceil((xs.max() + 1) * sx)), int(np.ceil((ys.max() + 1) * sy)))]


BUILTIN = {"shapes": shapes_detector}


def detectors(session) -> dict:
    return {**BUILTIN, **session.detectors}


def check(session, params) -> None:
    """Before any model work: the detector a run names must be known."""
    if params.detail is not None and params.detail.detector not in detectors(session):
        raise ParamError(f"detail: unknown detector {params.detail.detector!r}; known: "
                         f"{', '.join(detectors(session))} (add one with session.detectors[name] = fn)")


def finish(session, loaded, params, call: dict, images, seed: int):
    if params.detail is None or session._stop.is_set():
        return images
    return [_detail_one(session, loaded, params, call, im, seed) for im in images]


def _detail_one(session, loaded, params, call, image, seed: int):
    import torch
    from PIL import Image, ImageDraw, ImageFilter

    from ..options import apply as apply_options
    from ..schedulers import make_scheduler
    from .inpaint import paste_back

    spec = params.detail
    boxes = detectors(session)[spec.detector](image)
    if not boxes:
        return image
    pipe = _inpaint_pipe(session, loaded)
    apply_options(pipe, session.options, session.device)
    if spec.prompt is None:      # the run's own text (or its embeddings)
        text = {k: call[k] for k in ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds",
                                     "pooled_prompt_embeds", "negative_pooled_prompt_embeds") if k in call}
    else:
        text = {"prompt": spec.prompt, "negative_prompt": spec.negative_prompt or None}
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
        feathered = mask.filter(ImageFilter.GaussianBlur(spec.blur)) if spec.blur else mask
        pipe.scheduler = make_scheduler(params.scheduler, loaded.original_scheduler)
        out = pipe(image=image, mask_image=feathered, padding_mask_crop=spec.padding, strength=spec.strength,
                   num_inference_steps=spec.steps or params.steps, guidance_scale=params.guidance_scale,
                   width=image.width, height=image.height, output_type="pil",
                   generator=torch.Generator("cpu").manual_seed(seed), **text)
        image = paste_back(image, out.images[0], feathered)
    return image


def _inpaint_pipe(session, loaded):
    if DETAIL_KEY not in loaded.variants:
        import diffusers

        pipe = diffusers.AutoPipelineForInpainting.from_pipe(loaded.pipe)
        pipe.set_progress_bar_config(disable=not session.options.progress, leave=False)
        loaded.variants[DETAIL_KEY] = pipe
    return loaded.variants[DETAIL_KEY]
