"""Inpainting with A1111's semantics: white in mask_image is repainted.

The mask is blurred by mask_blur pixels (a Gaussian, as A1111 does), the inpainting pipeline
(diffusers' AutoPipelineForInpainting.from_pipe on the loaded model, so plain checkpoints work
too: diffusers blends the init latents back outside the mask at every step) repaints it, and the
result is pasted back through the blurred mask: outside it every pixel keeps the init image's
value. inpaint_padding switches to "only masked": the masked region plus padding is cropped,
inpainted at the full width x height, and pasted back (diffusers' padding_mask_crop).
"""
from __future__ import annotations


def blurred_mask(params, size: tuple[int, int]):
    """The mask at the run's size, blurred by mask_blur pixels (mode L)."""
    from PIL import Image, ImageFilter

    mask = params.mask_image.resize(size, Image.LANCZOS) if params.mask_image.size != size else params.mask_image
    return mask.filter(ImageFilter.GaussianBlur(params.mask_blur)) if params.mask_blur else mask


def prepare(params, call: dict) -> dict:
    if params.mask_image is None:
        return call
    width, height = call["image"].size
    call = {**call, "mask_image": blurred_mask(params, (width, height)), "width": width, "height": height}
    if params.inpaint_padding is not None:
        call["padding_mask_crop"] = params.inpaint_padding
    return call


def paste_back(init, result, mask):
    """init outside the mask, result inside, blended through the (blurred) mask's grey levels."""
    import numpy as np
    from PIL import Image

    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    if result.size != init.size:
        result = result.resize(init.size, Image.LANCZOS)
    mixed = np.asarray(init, dtype=np.float32) * (1 - alpha) + np.asarray(result.convert("RGB"), dtype=np.float32) * alpha
    return Image.fromarray(np.clip(mixed.round(), 0, 255).astype(np.uint8))


def finish(params, call: dict, images):
    if params.mask_image is None:
        return images
    return [paste_back(call["image"], im, call["mask_image"]) for im in images]
