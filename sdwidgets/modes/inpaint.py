"""Inpainting with A1111's semantics: white in mask_image is repainted.

The mask is blurred by mask_blur pixels (a Gaussian, as A1111 does), the inpainting pipeline
(diffusers' AutoPipelineForInpainting.from_pipe on the loaded model, so plain checkpoints work
too: diffusers blends the init latents back outside the mask at every step) repaints it, and the
result is pasted back through the blurred mask: outside it every pixel keeps the init image's
value. inpaint_padding switches to "only masked": the masked region plus padding is cropped,
inpainted at the full width x height, and pasted back (diffusers' padding_mask_crop).
Outpainting is inpainting on a larger canvas: outpaint_canvas(image, right=32) gives the init
image (the new border filled with the edge pixels) and its mask (white over the new border).
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


def outpaint_canvas(image, left: int = 0, top: int = 0, right: int = 0, bottom: int = 0):
    """(init_image, mask_image) for outpainting: `image` on a canvas grown by the given pixels.

    The new border repeats the nearest edge pixels (a start the model can continue) and is white
    in the mask; generate with width/height = the canvas size (multiples of 8).
    """
    import numpy as np
    from PIL import Image

    from ..errors import ParamError
    from ..validate import check_int, load_image

    sides = {name: check_int(name, value, 0, 4096) for name, value in
             (("left", left), ("top", top), ("right", right), ("bottom", bottom))}
    if not any(sides.values()):
        raise ParamError("outpaint_canvas: give at least one of left, top, right, bottom (pixels to add)")
    pixels = np.asarray(load_image(image, "image"))
    pad = ((sides["top"], sides["bottom"]), (sides["left"], sides["right"]), (0, 0))
    init = Image.fromarray(np.pad(pixels, pad, mode="edge"))
    mask = np.full(init.size[::-1], 255, dtype=np.uint8)
    mask[sides["top"]:sides["top"] + pixels.shape[0], sides["left"]:sides["left"] + pixels.shape[1]] = 0
    return init, Image.fromarray(mask, mode="L")
