"""Diffusion explainer: pick an image, move t, see x_t in latent space (decoded) beside the same
noise in pixel space, with the scheduler's alpha_bar curve and a marker at t."""
from __future__ import annotations

import io

import ipywidgets as W

from .. import explain
from .base import Panel, image_value, image_widget, message, short_error

SIZE = 160


def example_image(size: int = 64):
    """A red circle on a blue background (no model, no file)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (40, 70, 200))
    ImageDraw.Draw(img).ellipse([size * 0.2, size * 0.2, size * 0.8, size * 0.8], fill=(220, 30, 30))
    return img


class ExplainerPanel(Panel):
    """`image_source()` (optional) returns the last generated image. Nothing loads until `show()`
    or the first interaction."""

    def __init__(self, session, image_source=None, model: str | None = None):
        super().__init__()
        self.session, self.image_source, self.model = session, image_source, model
        self.source = W.Dropdown(options=[("example: red circle", "example"), ("last generated", "last"),
                                          ("uploaded", "upload")], value="example", description="Image")
        self.upload = W.FileUpload(accept="image/*", multiple=False)
        self.t = W.IntSlider(value=500, min=0, max=999, description="t", continuous_update=False,
                             layout=W.Layout(width="420px"))
        self.seed = W.IntText(value=0, description="noise seed", layout=W.Layout(width="180px"))
        self.go = W.Button(description="Show", icon="eye")
        self.original, self.latent, self.pixel = image_widget(SIZE), image_widget(SIZE), image_widget(SIZE)
        self.curve = W.Image(format="png", width=256, height=160)
        self.formula = W.HTML("x<sub>t</sub> = √ᾱ<sub>t</sub> x<sub>0</sub> + √(1−ᾱ<sub>t</sub>) ε")
        self.status = W.HTML()
        self._x0, self._bars = None, None
        self._uploaded_image = None
        self.on_click(self.go, self._show_clicked)
        for widget in (self.t, self.seed, self.source):
            self.observe(widget, self._changed)
        self.observe(self.upload, self._uploaded)
        self.source_image = None

        def captioned(text, widget):
            return W.VBox([W.HTML(f"<b style='font-size:12px'>{text}</b>"), widget])

        self.root = W.VBox([
            W.HBox([self.source, self.upload, self.go]), W.HBox([self.t, self.seed]), self.formula,
            W.HBox([captioned("x<sub>0</sub>", self.original), captioned("latent space, decoded", self.latent),
                    captioned("pixel space", self.pixel), captioned("ᾱ<sub>t</sub>", self.curve)]),
            self.status])

    def _pick_image(self):
        if self.source.value == "last":
            image = self.image_source() if self.image_source is not None else None
            if image is None:
                raise ValueError("no generated image yet: generate one, or pick the example")
            return image
        if self.source.value == "upload":
            if self._uploaded_image is None:
                raise ValueError("upload an image first")
            return self._uploaded_image
        return example_image()

    def show(self, _button=None) -> None:
        """(Re)compute for the current image, t and seed."""
        try:
            if self._x0 is None:
                self.source_image = self._pick_image()
                self._bars = explain.alpha_bars(self.session, self.model)
                self.t.max = len(self._bars) - 1        # before _x0 is set: no nested show() from the t observer
                self._x0 = explain.encode(self.session, self.source_image, self.model)
                self.original.value = image_value(self.source_image, SIZE)
            noised = explain.forward_noise(self.session, self.source_image, self.t.value, seed=self.seed.value,
                                           model=self.model, x0=self._x0)
        except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
            self.status.value = message(short_error(exc), "error")
            return
        ab = noised.alpha_bar
        self.latent.value = image_value(noised.latent, SIZE)
        self.pixel.value = image_value(noised.pixel, SIZE)
        self.curve.value = image_value(explain.curve_image(self._bars, noised.t), 0)
        self.status.value = message(f"t = {noised.t}: ᾱ = {ab:.4f}, √ᾱ = {ab ** 0.5:.3f} (signal), "
                                    f"√(1−ᾱ) = {(1 - ab) ** 0.5:.3f} (noise)")
        self.last = noised

    def _show_clicked(self, _button) -> None:
        self._x0 = None              # pick the image again (e.g. a newer "last generated")
        self.show()

    def _changed(self, change) -> None:
        if change["owner"] is self.source:
            self._x0 = None
        if self._x0 is not None or change["owner"] is self.source:
            self.show()

    def _uploaded(self, change) -> None:
        if change["new"]:
            from PIL import Image

            self._uploaded_image = Image.open(io.BytesIO(bytes(change["new"][0]["content"]))).convert("RGB")
            self._x0 = None
            if self.source.value == "upload":
                self.show()
            else:
                self.source.value = "upload"     # _changed shows it

    def close(self) -> None:
        self.image_source = None
        super().close()
