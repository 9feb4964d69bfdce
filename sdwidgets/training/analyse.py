"""Read colours, shape, position and size off the pixels of a 64x64 image of the world.

- colours: every pixel goes to its nearest palette colour; the background is the most
  common colour on the border, the foreground the most common other colour of the
  largest connected non-background blob;
- shape: how the blob (holes filled) fills its bounding box: square ~1.0, circle ~0.785,
  triangle ~0.5; a blob with a large hole (background at its centre) is a ``ring``;
- position: the blob's centroid, by thirds of the image; size from the blob's area.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .world import COLOURS, SIZE, THIRD, nearest_palette


@dataclass
class Reading:
    fg: str | None
    bg: str
    shape: str | None    # circle | square | triangle | ring | None (nothing found)
    cx: float
    cy: float
    area: int            # filled blob area in pixels
    fill: float          # filled area / bounding-box area
    hole: float          # hole area / filled area
    radius: float        # equivalent shape radius in the world's units

    @property
    def column(self) -> str:
        return "left" if self.cx < THIRD else "right" if self.cx >= 2 * THIRD else "mid"

    @property
    def row(self) -> str:
        return "top" if self.cy < THIRD else "bottom" if self.cy >= 2 * THIRD else "mid"

    @property
    def size(self) -> str:
        return "small" if self.radius <= 12.5 else "large" if self.radius >= 16.5 else "medium"

    def at(self, position: str) -> bool:
        """Whether the shape's centroid is in the third named by ``position``."""
        if position == "left":
            return self.column == "left"
        if position == "right":
            return self.column == "right"
        if position == "top":
            return self.row == "top"
        if position == "bottom":
            return self.row == "bottom"
        if position == "center":
            return self.column == "mid" and self.row == "mid"
        raise ValueError(f"position must be one of left, right, top, bottom, center; got {position!r}")


def _as_array(img) -> np.ndarray:
    a = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img)
    if a.shape[:2] != (SIZE, SIZE):
        a = cv2.resize(a, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return a[..., :3]


def _largest_blob(img):
    """(background palette index, bool mask of the largest non-background component or None)."""
    lab = nearest_palette(_as_array(img))
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    bg = int(np.bincount(border, minlength=8).argmax())
    mask = (lab != bg).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return bg, None, lab
    return bg, comp == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax()), lab


def analyse(img) -> Reading:
    """Analyse one image (PIL image or HxWx3 uint8 array; resized to 64x64 if needed)."""
    bg, blob, lab = _largest_blob(img)
    if blob is None:
        return Reading(None, COLOURS[bg], None, SIZE / 2, SIZE / 2, 0, 0.0, 0.0, 0.0)
    fg = int(np.bincount(lab[blob], minlength=8).argmax())
    if blob.sum() < 12:
        return Reading(COLOURS[fg], COLOURS[bg], None, SIZE / 2, SIZE / 2, int(blob.sum()), 0.0, 0.0, 0.0)
    # fill holes: everything not reachable from outside through non-blob pixels
    outside = np.zeros((SIZE + 2, SIZE + 2), np.uint8)
    outside[1:-1, 1:-1] = blob
    flood = outside.copy()
    cv2.floodFill(flood, None, (0, 0), 2)
    filled = (flood[1:-1, 1:-1] != 2)
    area = int(filled.sum())
    hole = float((filled & ~blob).sum()) / max(area, 1)
    ys, xs = np.nonzero(filled)
    bbox = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    fill = area / bbox
    cx, cy = float(xs.mean() + 0.5), float(ys.mean() + 0.5)
    by, bx = np.nonzero(blob)
    iy, ix = int(by.mean()), int(bx.mean())
    centre_empty = not blob[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2].any()
    if hole > 0.12 or (centre_empty and fill < 0.65):
        shape = "ring"
    elif fill >= 0.9:
        shape = "square"
    elif fill >= 0.65:
        shape = "circle"
    else:
        shape = "triangle"
    radius = float(np.sqrt(area / (1.8 if shape == "triangle" else np.pi)))
    return Reading(COLOURS[fg], COLOURS[bg], shape, cx, cy, area, float(fill), hole, radius)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    u = (a | b).sum()
    return float((a & b).sum() / u) if u else 1.0


def blob_mask(img) -> np.ndarray:
    """The filled foreground blob of an image (bool HxW), for IoU with a control shape."""
    _, blob, _ = _largest_blob(img)
    if blob is None:
        return np.zeros((SIZE, SIZE), bool)
    outside = np.zeros((SIZE + 2, SIZE + 2), np.uint8)
    outside[1:-1, 1:-1] = blob
    cv2.floodFill(outside, None, (0, 0), 2)
    return outside[1:-1, 1:-1] != 2
