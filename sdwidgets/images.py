"""Small image helpers shared by params, log and run (content hashes, grids, data URLs)."""
from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path


def image_sha256(image) -> str:
    """Content hash of an image's pixels (mode + size + bytes), independent of file encoding."""
    h = hashlib.sha256()
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stored_inputs(folder) -> dict:
    """Init/control images kept by the log, by sha256 (loaded lazily by path)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.glob("*.png")}


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(image, min_size: int = 0) -> str:
    """A PNG data URL; tiny images are upscaled (nearest) so they stay visible."""
    image = upscale(image, min_size)
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def upscale(image, min_size: int):
    from PIL import Image

    if min_size and max(image.size) < min_size:
        factor = -(-min_size // max(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image


def grid(images, cols: int | None = None, pad: int = 2, background=(255, 255, 255)):
    """Tile images (all the same size) into one image."""
    from PIL import Image

    images = list(images)
    if not images:
        raise ValueError("grid needs at least one image")
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    w, h = images[0].size
    out = Image.new("RGB", (cols * w + (cols - 1) * pad, rows * h + (rows - 1) * pad), background)
    for i, im in enumerate(images):
        out.paste(im.convert("RGB"), ((i % cols) * (w + pad), (i // cols) * (h + pad)))
    return out
