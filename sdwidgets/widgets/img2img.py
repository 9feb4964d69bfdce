"""Image-to-image panel: an init image (uploaded, from a path or variable, or sent from a result)
and the denoising strength. `values()` adds init_image/strength to Session.generate's arguments."""
from __future__ import annotations

import io

import ipywidgets as W

from ..validate import load_image
from .base import ImageInput, Panel, image_value, image_widget, message, short_error

THUMB = 128
_style = {"description_width": "70px"}


class Img2ImgPanel(ImageInput, Panel):
    """`image_source()` (optional) returns the image for "use last generated"."""

    def __init__(self, image_source=None):
        super().__init__()
        self.image_source = image_source
        self.source = None                       # the PIL init image
        self.enabled = W.Checkbox(value=False, description="use as init image (image-to-image)", indent=False)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.path = W.Text(placeholder="image path or notebook variable", layout=W.Layout(width="260px"))
        self.load = W.Button(description="Load", layout=W.Layout(width="60px"))
        self.use_last = W.Button(description="use last generated", layout=W.Layout(width="150px"))
        self.clear = W.Button(description="clear", icon="times", layout=W.Layout(width="80px"))
        self.strength = W.FloatSlider(value=0.75, min=0.0, max=1.0, step=0.05, description="Denoise",
                                      tooltip="denoising strength: 0 keeps the image, 1 redraws it", style=_style)
        self.thumb = image_widget(THUMB)
        self.status = W.HTML()
        self.observe(self.upload, self._uploaded)
        self.on_click(self.load, self._load_clicked)
        self.on_click(self.use_last, self._use_last_clicked)
        self.on_click(self.clear, self._clear_clicked)
        self.root = W.VBox([self.enabled, W.HBox([self.upload, self.path, self.load, self.use_last, self.clear]),
                            W.HBox([self.thumb, self.strength]), self.status])
        self.root.add_class("sdw-img2img")

    def values(self) -> dict:
        """{"init_image", "strength"} when on and an image is set, else {} (text-to-image)."""
        if not self.enabled.value or self.source is None:
            return {}
        return {"init_image": self.source, "strength": self.strength.value}

    def set_image(self, image, strength: float | None = None) -> bool:
        """Use `image` as the init image (and turn image-to-image on); False with a message if unreadable."""
        try:
            self.source = load_image(image, "init_image")
        except ValueError as exc:
            self.status.value = message(short_error(exc), "error")
            return False
        if strength is not None:
            self.strength.value = strength
        self.thumb.value = image_value(self.source, THUMB)
        self.enabled.value = True
        self.status.value = message(f"init image {self.source.width}x{self.source.height}", "ok")
        return True

    def reset(self) -> None:
        """Back to text-to-image (no init image)."""
        self.source = None
        self.enabled.value = False
        self.thumb.value = image_widget(THUMB).value
        self.status.value = ""

    # ---- handlers ---------------------------------------------------------------------------
    def _uploaded(self, change) -> None:
        files = change["new"]
        if files:
            from PIL import Image

            try:
                image = Image.open(io.BytesIO(bytes(files[0]["content"])))
                image.load()
            except OSError as exc:
                self.status.value = message(f"init_image: cannot read the upload ({exc})", "error")
                return
            self.set_image(image)

    def _clear_clicked(self, _button) -> None:
        self.reset()

    def close(self) -> None:
        self.image_source = None
        super().close()
