"""The procedural world of the embedded model (issue 3).

One shape per 64x64 image on a flat background of another palette colour, plus a
caption grammar whose parts are independently left out.  Everything here is plain
numpy + OpenCV and fully determined by a ``numpy.random.Generator``.

The VAE is trained on a broader world (:func:`render_broad`): outlines and rings,
several shapes at once, stripes, thin lines.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

SIZE = 64

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOURS = list(PALETTE)
PALETTE_ARRAY = np.array([PALETTE[c] for c in COLOURS], dtype=np.uint8)
SHAPES = ["circle", "square", "triangle"]
SIZES = {"small": (8.0, 11.0), "large": (18.0, 22.0), None: (8.0, 22.0)}
POSITIONS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
#: Every word the grammar can produce, plus the LoRA trigger word.
TRIGGER = "sks"
VOCABULARY = sorted(
    set(COLOURS) | set(SHAPES) | {"small", "large", "a", "on", "the", "at", "in", "background",
                                  "left", "right", "top", "bottom", "center", "ring", TRIGGER}
)
THIRD = SIZE / 3.0

# Drop probabilities of the caption parts (each independently).
P_EMPTY = 0.10
P_COLOUR, P_SHAPE, P_BG, P_ARTICLE = 0.85, 0.85, 0.8, 0.9
P_SIZE_WORD = 0.45      # chance that a size word constrains the size
P_POSITION_WORD = 0.65  # chance that a position word constrains the position


@dataclass
class Scene:
    """One captioned image of the world."""

    fg: str
    bg: str
    shape: str          # circle | square | triangle | ring
    cx: float
    cy: float
    r: float
    size_word: str | None = None
    position: str | None = None
    thickness: float = 0.0  # rings only
    words: dict = field(default_factory=dict)  # which caption parts are named

    def caption(self) -> str:
        return caption_of(self)


def shape_extent(shape: str, r: float) -> tuple[float, float, float, float]:
    """Extent (left, right, up, down) of a shape around its centroid."""
    if shape == "square":
        s = 0.886 * r
        return s, s, s, s
    if shape == "triangle":
        return r, r, 1.2 * r, 0.6 * r
    return r, r, r, r


def _axis_range(lo_ext: float, hi_ext: float, third: str | None) -> tuple[float, float]:
    """Allowed centre range on one axis, for a third ('lo','mid','hi') or anywhere."""
    if third is None:
        return lo_ext, SIZE - hi_ext
    bounds = {"lo": (0.0, THIRD), "mid": (THIRD, 2 * THIRD), "hi": (2 * THIRD, SIZE)}[third]
    a, b = bounds[0] + 1.5, bounds[1] - 1.5
    # Large shapes may leave the image by up to 30% of their extent.
    a = max(a, 0.7 * lo_ext)
    b = min(b, SIZE - 0.7 * hi_ext)
    if a > b:
        a = b = (max(bounds[0] + 1.5, min(a, bounds[1] - 1.5)))
    return a, b


def place(shape: str, r: float, position: str | None, rng: np.random.Generator) -> tuple[float, float]:
    el, er, eu, ed = shape_extent(shape, r)
    tx = {"left": "lo", "right": "hi", "center": "mid"}.get(position)
    ty = {"top": "lo", "bottom": "hi", "center": "mid"}.get(position)
    ax, bx = _axis_range(el, er, tx)
    ay, by = _axis_range(eu, ed, ty)
    return float(rng.uniform(ax, bx)), float(rng.uniform(ay, by))


def sample_scene(rng: np.random.Generator, *, shapes=SHAPES, force_full: bool = False) -> Scene:
    """Draw a scene and decide which caption parts name it."""
    fg, bg = rng.choice(len(COLOURS), size=2, replace=False)
    fg, bg = COLOURS[fg], COLOURS[bg]
    shape = shapes[rng.integers(len(shapes))]
    size_word = None
    if rng.random() < P_SIZE_WORD:
        size_word = "small" if rng.random() < 0.5 else "large"
    r = float(rng.uniform(*SIZES[size_word]))
    position = None
    if rng.random() < P_POSITION_WORD:
        position = list(POSITIONS)[rng.integers(5)]
    cx, cy = place(shape if shape != "ring" else "circle", r, position, rng)
    thickness = float(max(2.0, rng.uniform(0.22, 0.32) * r)) if shape == "ring" else 0.0
    if force_full:
        words = dict(article=True, colour=True, shape=True, bg=True, empty=False)
    else:
        words = dict(article=rng.random() < P_ARTICLE, colour=rng.random() < P_COLOUR,
                     shape=rng.random() < P_SHAPE, bg=rng.random() < P_BG,
                     empty=rng.random() < P_EMPTY)
    return Scene(fg, bg, shape, cx, cy, r, size_word, position, thickness, words)


def caption_of(scene: Scene, shape_word: str | None = None) -> str:
    w = scene.words
    if w.get("empty"):
        return ""
    parts: list[str] = []
    if scene.size_word:
        parts.append(scene.size_word)
    if w.get("colour", True):
        parts.append(scene.fg)
    if w.get("shape", True):
        parts.append(shape_word or scene.shape)
    if scene.position:
        parts.append(POSITIONS[scene.position])
    if w.get("bg", True):
        parts.append(f"on a {scene.bg} background")
    if not parts:
        return ""
    if w.get("article", True) and (scene.size_word or w.get("colour", True) or w.get("shape", True)):
        parts.insert(0, "a")
    return " ".join(parts)


# ----------------------------------------------------------------------------- rendering
_SHIFT = 4
_ONE = 1 << _SHIFT


def _pt(x: float, y: float) -> tuple[int, int]:
    # pixel centres are at integer+0.5 in our continuous coordinates
    return int(round((x - 0.5) * _ONE)), int(round((y - 0.5) * _ONE))


def draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, r: float, colour,
               thickness: float = 0.0, outline: bool = False, line: int = 2) -> None:
    col = tuple(int(c) for c in colour)
    if shape == "ring":
        outer = np.zeros(img.shape[:2], np.uint8)
        cv2.circle(outer, _pt(cx, cy), int(round(r * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        inner = np.zeros_like(outer)
        cv2.circle(inner, _pt(cx, cy), int(round((r - thickness) * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        img[(outer == 1) & (inner == 0)] = col
        return
    if shape == "circle":
        if outline:
            cv2.circle(img, _pt(cx, cy), int(round(r * _ONE)), col, line, cv2.LINE_8, _SHIFT)
        else:
            cv2.circle(img, _pt(cx, cy), int(round(r * _ONE)), col, -1, cv2.LINE_8, _SHIFT)
        return
    el, er, eu, ed = shape_extent(shape, r)
    if shape == "square":
        pts = [(cx - el, cy - eu), (cx + er, cy - eu), (cx + er, cy + ed), (cx - el, cy + ed)]
    elif shape == "triangle":
        pts = [(cx, cy - eu), (cx + er, cy + ed), (cx - el, cy + ed)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    arr = np.array([_pt(x, y) for x, y in pts], np.int32)
    if outline:
        cv2.polylines(img, [arr], True, col, line, cv2.LINE_8, _SHIFT)
    else:
        cv2.fillPoly(img, [arr], col, cv2.LINE_8, _SHIFT)


def render(scene: Scene) -> np.ndarray:
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = PALETTE[scene.bg]
    draw_shape(img, scene.shape, scene.cx, scene.cy, scene.r, PALETTE[scene.fg], scene.thickness)
    return img


def shape_mask(scene: Scene) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    draw_shape(img, scene.shape, scene.cx, scene.cy, scene.r, (255, 255, 255), scene.thickness)
    return img[..., 0] > 0


def render_broad(rng: np.random.Generator) -> np.ndarray:
    """An image of the broader world the VAE learns to code."""
    kind = rng.random()
    if kind < 0.4:  # captioned world, rings included
        sc = sample_scene(rng, shapes=SHAPES + ["ring"])
        return render(sc)
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = PALETTE_ARRAY[rng.integers(8)]
    if kind < 0.55:  # stripes
        width = int(rng.integers(2, 12))
        c2 = PALETTE_ARRAY[rng.integers(8)]
        axis = rng.integers(2)
        off = int(rng.integers(width * 2))
        for s in range(-off, SIZE, 2 * width):
            if axis == 0:
                img[max(s, 0):max(s + width, 0)] = c2
            else:
                img[:, max(s, 0):max(s + width, 0)] = c2
    n = int(rng.integers(1, 4))
    for _ in range(n):
        col = PALETTE_ARRAY[rng.integers(8)]
        t = rng.random()
        r = float(rng.uniform(3, 26))
        cx, cy = rng.uniform(0, SIZE, size=2)
        if t < 0.3:
            draw_shape(img, SHAPES[rng.integers(3)], cx, cy, r, col)
        elif t < 0.55:
            draw_shape(img, "ring", cx, cy, max(r, 5), col, thickness=float(rng.uniform(1.5, max(2.0, 0.4 * r))))
        elif t < 0.75:
            draw_shape(img, SHAPES[rng.integers(3)], cx, cy, max(r, 4), col, outline=True,
                       line=int(rng.integers(1, 4)))
        else:
            p1 = tuple(int(v) for v in rng.integers(-8, SIZE + 8, size=2))
            p2 = tuple(int(v) for v in rng.integers(-8, SIZE + 8, size=2))
            cv2.line(img, p1, p2, tuple(int(c) for c in col), int(rng.integers(1, 4)), cv2.LINE_8)
    return img


def edges(img: np.ndarray) -> np.ndarray:
    """Canny edge map (thresholds 100/200) as a 3-channel uint8 image, the ControlNet input."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    e = cv2.Canny(gray, 100, 200)
    return np.repeat(e[..., None], 3, axis=2)


def to_tensor(imgs: np.ndarray):
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x) -> np.ndarray:
    """float NCHW in [-1, 1] (a decode) -> uint8 NHWC: the inverse of :func:`to_tensor`."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def nearest_palette(img: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour of each pixel (HxW int)."""
    d = ((img[..., None, :].astype(np.int32) - PALETTE_ARRAY.astype(np.int32)) ** 2).sum(-1)
    return d.argmin(-1)
