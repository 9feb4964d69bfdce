"""Inpaint panel: paint a mask over an image in the notebook (ipycanvas), then inpaint with it.

The mask lives here, in Python: every stroke the browser reports (mouse down / move / up) is
drawn into a PIL "L" image at the image's own resolution, and the canvas only shows it (the
image below, the mask in translucent red above). Brush size, eraser and clear; "use last image"
takes the dashboard's latest result. `values()` gives init_image, mask_image, strength and
mask_blur when inpainting is switched on.
"""
from __future__ import annotations

import ipywidgets as W

from .base import Panel, close_tree

DISPLAY = 256       # the canvas is at least this many pixels wide: tiny images are painted enlarged


class MaskCanvas(Panel):
    def __init__(self, image_source=None):
        from ipycanvas import MultiCanvas

        super().__init__()
        self.image_source = image_source
        self.image = None
        self.mask = None
        self.scale = 1.0
        self._last = None
        self.canvas = MultiCanvas(2, width=DISPLAY, height=DISPLAY)
        self.enabled = W.Checkbox(value=False, description="Inpaint with this mask", indent=False)
        self.brush = W.IntSlider(value=8, min=1, max=64, description="Brush (px)")
        self.eraser = W.ToggleButton(value=False, description="Eraser", icon="eraser")
        self.clear = W.Button(description="Clear", icon="trash")
        self.use_last = W.Button(description="Use last image", icon="image")
        self.strength = W.FloatSlider(value=0.75, min=0.05, max=1.0, step=0.05, description="Denoising")
        self.mask_blur = W.IntSlider(value=4, min=0, max=64, description="Mask blur")
        self.status = W.HTML(value="")
        top = self.canvas[1]
        top.on_mouse_down(self.stroke_start)
        top.on_mouse_move(self.stroke_move)
        top.on_mouse_up(self.stroke_end)
        top.on_mouse_out(self.stroke_end)
        self.on_click(self.clear, self._clear_clicked)
        self.on_click(self.use_last, self._use_last_clicked)
        self.root = W.VBox([W.HBox([self.use_last, self.clear, self.eraser, self.brush]), self.canvas,
                            W.HBox([self.enabled, self.strength, self.mask_blur]), self.status])

    # ---- image and mask -------------------------------------------------------------------------
    def set_image(self, image) -> None:
        """Paint over `image` (a fresh, empty mask of its size)."""
        from PIL import Image

        self.image = image.convert("RGB")
        self.mask = Image.new("L", self.image.size, 0)
        self.scale = max(1.0, DISPLAY / max(self.image.size))
        w, h = (round(v * self.scale) for v in self.image.size)
        self.canvas.width, self.canvas.height = w, h
        import numpy as np

        self.canvas[0].put_image_data(np.asarray(self.image.resize((w, h), Image.NEAREST)), 0, 0)
        self._redraw()

    def values(self) -> dict:
        """Session.generate keyword arguments: inpainting with the painted mask, when switched on."""
        if not self.enabled.value or self.image is None:
            return {}
        return {"init_image": self.image, "mask_image": self.mask.copy(), "strength": self.strength.value,
                "mask_blur": self.mask_blur.value}

    # ---- strokes (bound methods: ipycanvas calls them with canvas pixels) --------------------------
    def stroke_start(self, x: float, y: float) -> None:
        if self.mask is None:
            return
        self._last = self._to_image(x, y)
        self._paint(self._last, self._last)

    def stroke_move(self, x: float, y: float) -> None:
        if self._last is None:
            return
        point = self._to_image(x, y)
        self._paint(self._last, point)
        self._last = point

    def stroke_end(self, x: float = 0, y: float = 0) -> None:
        self._last = None

    def _to_image(self, x: float, y: float) -> tuple[float, float]:
        return x / self.scale, y / self.scale

    def _paint(self, a, b) -> None:
        from PIL import ImageDraw

        value = 0 if self.eraser.value else 255
        r = self.brush.value / 2
        draw = ImageDraw.Draw(self.mask)
        draw.line([a, b], fill=value, width=self.brush.value)
        for x, y in (a, b):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=value)
        self._redraw()

    def _redraw(self) -> None:
        import numpy as np
        from PIL import Image

        w, h = self.canvas.width, self.canvas.height
        alpha = np.asarray(self.mask.resize((w, h), Image.NEAREST), dtype=np.uint8) // 2
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., 0], rgba[..., 3] = 255, alpha
        self.canvas[1].clear()
        self.canvas[1].put_image_data(rgba, 0, 0)
        self.status.value = f"{int((np.asarray(self.mask) > 127).mean() * 100)}% of the image masked"

    # ---- buttons ----------------------------------------------------------------------------------
    def _clear_clicked(self, _button) -> None:
        if self.image is not None:
            from PIL import Image

            self.mask = Image.new("L", self.image.size, 0)
            self._redraw()

    def _use_last_clicked(self, _button) -> None:
        image = self.image_source() if self.image_source else None
        if image is None:
            self.status.value = "no image yet: generate one first"
            return
        self.set_image(image)

    def close(self) -> None:
        top = self.canvas[1]
        for register, handler in ((top.on_mouse_down, self.stroke_start), (top.on_mouse_move, self.stroke_move),
                                  (top.on_mouse_up, self.stroke_end), (top.on_mouse_out, self.stroke_end)):
            register(handler, remove=True)
        for layer in self.canvas._canvases:     # the layers are not children: close them (and their layouts)
            close_tree(layer)
        super().close()
