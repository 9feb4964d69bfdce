"""ControlNet panel: one row per control (kind, image, preprocessor options, scale, start/end),
with the conditioning image updated as the options move, before anything is generated."""
from __future__ import annotations

import io
from pathlib import Path

import ipywidgets as W

from ..controlnet import PREPROCESSORS, Control
from ..validate import load_image
from .base import ImageInput, Panel, close_tree, image_value, image_widget, message, short_error

THUMB = 128
PREVIEW_MAX = 512          # the preview runs the preprocessor at most at this size
_style = {"description_width": "70px"}
# dropdown label -> Control(preprocess=...); None ("auto") would show as an empty dropdown in the browser
PREPROCESS = {"auto": None, "run preprocessor": True, "use image as is": False}


class ControlRow(ImageInput, Panel):
    """One control. `image_source()` (optional) returns the image for "use last generated"."""

    def __init__(self, kind: str = "canny", image=None, image_source=None, describe=None):
        super().__init__()
        self.image_source, self.describe = image_source, describe
        self.source = None                      # the PIL image the control is made from
        self.kind = W.Dropdown(options=list(PREPROCESSORS), value=kind, description="Kind", style=_style,
                               layout=W.Layout(width="180px"))
        self.enabled = W.Checkbox(value=True, description="on", indent=False, layout=W.Layout(width="50px"))
        self.preprocess = W.Dropdown(options=list(PREPROCESS), value="auto", description="Input", style=_style,
                                     layout=W.Layout(width="220px"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.path = W.Text(placeholder="image path or notebook variable", layout=W.Layout(width="260px"))
        self.load = W.Button(description="Load", layout=W.Layout(width="60px"))
        self.use_last = W.Button(description="use last generated", layout=W.Layout(width="150px"))
        self.scale = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="Scale", style=_style)
        self.span = W.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.05, description="Start/end",
                                       style=_style)
        self.remove = W.Button(description="remove", icon="trash", layout=W.Layout(width="90px"))
        self.options = W.VBox()
        self.thumb, self.preview = image_widget(THUMB), image_widget(THUMB)
        self.status = W.HTML()
        self.net = W.HTML()                     # which ControlNet the kind uses with the current model
        self.preview_image = None               # the last conditioning image shown
        self.preview_count = 0                  # conditioning images computed (tests, diagnostics)
        self.observe(self.kind, self._kind_changed)
        self.observe(self.preprocess, self.update_preview)
        self.observe(self.upload, self._uploaded)
        self.on_click(self.load, self._load_clicked)
        self.on_click(self.use_last, self._use_last_clicked)
        self._option_widgets: dict = {}
        self._build_options()
        self.root = W.VBox([
            W.HBox([self.enabled, self.kind, self.preprocess, self.remove, self.net]),
            W.HBox([self.upload, self.path, self.load, self.use_last]),
            W.HBox([W.VBox([W.Label("image"), self.thumb]), W.VBox([W.Label("conditioning"), self.preview]),
                    W.VBox([self.options, self.scale, self.span])]),
            self.status], layout=W.Layout(border="1px solid #ddd", padding="4px", margin="2px 0"))
        self.update_net()
        if image is not None:
            self.set_image(image)

    # ---- the control ----------------------------------------------------------------------
    def option_values(self) -> dict:
        return {name: widget.value for name, widget in self._option_widgets.items()}

    def control(self) -> Control | None:
        """The sdw.Control this row describes (None when off or without an image). May raise ParamError."""
        if not self.enabled.value or self.source is None:
            return None
        start, end = self.span.value
        return Control(self.kind.value, self.source, scale=self.scale.value, start=start, end=end,
                       preprocess=PREPROCESS[self.preprocess.value], **self.option_values())

    def set_image(self, image) -> None:
        try:
            self.source = load_image(image, "controls.image")
        except ValueError as exc:
            self.status.value = message(short_error(exc), "error")
            return
        self.thumb.value = image_value(self.source, THUMB)
        self.update_preview()

    def update_preview(self, _change=None) -> None:
        """Run the preprocessor only and show the conditioning image."""
        if self.source is None:
            self.status.value = message("load an image to see its conditioning image")
            return
        try:
            control = Control(self.kind.value, self.source, preprocess=PREPROCESS[self.preprocess.value],
                              **self.option_values())
            w, h = self.source.size
            factor = min(1.0, PREVIEW_MAX / max(w, h))
            image = control.preview((max(8, int(w * factor)), max(8, int(h * factor))))
        except Exception as exc:  # noqa: BLE001 - a preprocessor that needs weights, a bad option: say so, stay usable
            self.status.value = message(short_error(exc), "error")
            return
        self.preview_image = image
        self.preview_count += 1
        self.preview.value = image_value(image, THUMB)
        self.status.value = ""

    # ---- handlers --------------------------------------------------------------------------
    def _build_options(self) -> None:
        for widget in self._option_widgets.values():
            widget.unobserve(self.update_preview, names="value")
            widget.close()
        self._option_widgets = {}
        for name, default in PREPROCESSORS[self.kind.value][2].items():
            if isinstance(default, bool):
                widget = W.Checkbox(value=default, description=name)
            elif isinstance(default, int):
                widget = W.IntSlider(value=default, min=0, max=255, description=name.replace("_threshold", ""),
                                     continuous_update=True, style=_style)
            else:
                widget = W.FloatSlider(value=float(default), min=0.0, max=max(1.0, 2 * float(default)),
                                       description=name, style=_style)
            widget.observe(self.update_preview, names="value")
            self._option_widgets[name] = widget
        self.options.children = list(self._option_widgets.values())

    def update_net(self) -> None:
        self.net.value = self.describe(self.kind.value) if self.describe is not None else ""

    def _kind_changed(self, _change) -> None:
        self._build_options()
        self.update_net()
        self.update_preview()

    def _uploaded(self, change) -> None:
        files = change["new"]
        if files:
            from PIL import Image

            self.set_image(Image.open(io.BytesIO(bytes(files[0]["content"]))))

    def close(self) -> None:
        for widget in self._option_widgets.values():
            widget.unobserve(self.update_preview, names="value")
        self.image_source = self.describe = None
        super().close()


class ControlPanel(Panel):
    """Several controls at once: `controls()` is the list for Session.generate(controls=...)."""

    def __init__(self, image_source=None, session=None, model: str | None = None):
        super().__init__()
        self.image_source, self.session, self.model = image_source, session, model
        self.rows: list[ControlRow] = []
        self.add = W.Button(description="Add control", icon="plus")
        self.box = W.VBox()
        self.on_click(self.add, self._add_clicked)
        self.root = W.VBox([self.box, self.add])

    def add_control(self, kind: str = "canny", image=None) -> ControlRow:
        row = ControlRow(kind, image, image_source=self.image_source, describe=self.describe)
        row.remove.on_click(self._remove_clicked)
        self.rows.append(row)
        self.box.children = [r.root for r in self.rows]
        return row

    def controls(self) -> list:
        return [c for c in (row.control() for row in self.rows) if c is not None]

    def set_controls(self, controls) -> None:
        """Rows for exactly these sdw.Controls (a log row's), replacing the current ones."""
        for row in list(self.rows):
            self._drop(row)
        for control in controls:
            row = self.add_control(control.kind, control.image)
            row.preprocess.value = next(k for k, v in PREPROCESS.items() if v == control.preprocess)
            for name, value in control.options.items():
                if name in row._option_widgets:
                    row._option_widgets[name].value = value
            row.scale.value, row.span.value = control.scale, (control.start, control.end)
        self.box.children = [r.root for r in self.rows]

    def set_model(self, model: str | None) -> None:
        self.model = model
        for row in self.rows:
            row.update_net()

    def describe(self, kind: str) -> str:
        """Which ControlNet a `kind` control uses with the model (or why there is none)."""
        if self.session is None:
            return ""
        try:
            source = self.session.controlnet_source(kind, self.model)
        except Exception as exc:  # noqa: BLE001 - e.g. a model name that does not resolve yet
            return message(short_error(exc), "error")
        if source is None:
            return message(f"no {kind} ControlNet known for this model (session.register_controlnet({kind!r}, "
                           "folder))", "error")
        return message(f"ControlNet: {Path(source).name if Path(source).exists() else source}")

    def _add_clicked(self, _button) -> None:
        self.add_control()

    def _remove_clicked(self, button) -> None:
        for row in [r for r in self.rows if r.remove is button]:
            self._drop(row)
        self.box.children = [r.root for r in self.rows]

    def _drop(self, row: ControlRow) -> None:
        row.remove.on_click(self._remove_clicked, remove=True)
        self.rows.remove(row)
        row.close()

    def close(self) -> None:
        for row in self.rows:
            row.remove.on_click(self._remove_clicked, remove=True)
            row.close()
        self.rows.clear()
        self.image_source = None
        super().close()
        close_tree(self.box)
