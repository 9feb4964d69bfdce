"""Actions on a generated image, as AUTOMATIC1111 users expect under every result: Save (the logged
PNG, parameters included), Copy parameters (its A1111 infotext), Send to img2img / ControlNet,
Reuse seed. One bar serves the live gallery and the log's detail view."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import ipywidgets as W

from .base import Panel


class ImageActions(Panel):
    """`show(images, paths, seeds, run_id)`; listeners get the chosen image (or seed)."""

    def __init__(self):
        super().__init__()
        self.which = W.Dropdown(options=[], description="", layout=W.Layout(width="110px", display="none"))
        self.save = W.HTML()                    # a download link: the browser saves the original PNG
        self.copy = W.HTML()                    # copies the infotext to the clipboard in the browser
        self.to_img2img = W.Button(description="to img2img", icon="image", disabled=True,
                                   tooltip="use this image as the init image", layout=W.Layout(width="110px"))
        self.to_control = W.Button(description="to ControlNet", icon="project-diagram", disabled=True,
                                   tooltip="add a ControlNet control made from this image", layout=W.Layout(width="130px"))
        self.reuse_seed = W.Button(description="reuse seed", icon="seedling", disabled=True,
                                   layout=W.Layout(width="110px"))
        self.infotext = W.Textarea(value="", disabled=True, rows=3, layout=W.Layout(width="100%", display="none"))
        self.images: list = []
        self.paths: list = []
        self.seeds: list = []
        self.run_id = ""
        self._listeners = {"img2img": [], "control": [], "seed": []}
        self.observe(self.which, self._chosen)
        self.on_click(self.to_img2img, self._img2img_clicked)
        self.on_click(self.to_control, self._control_clicked)
        self.on_click(self.reuse_seed, self._seed_clicked)
        self.root = W.VBox([W.HBox([self.which, self.save, self.copy, self.to_img2img, self.to_control,
                                    self.reuse_seed], layout=W.Layout(flex_flow="row wrap", align_items="center")),
                            self.infotext])
        self.root.add_class("sdw-actions")

    def on_img2img(self, callback) -> None:
        self._listeners["img2img"].append(callback)

    def on_control(self, callback) -> None:
        self._listeners["control"].append(callback)

    def on_seed(self, callback) -> None:
        self._listeners["seed"].append(callback)

    def show(self, images: list, paths: list, seeds: list, run_id: str = "") -> None:
        """The images of one run (PIL), their logged PNG files and seeds."""
        self.images, self.paths, self.seeds, self.run_id = list(images), [Path(p) for p in paths], list(seeds), run_id
        options = [(f"image {i + 1}", i) for i in range(len(self.images))]
        self.which.layout.display = "" if len(options) > 1 else "none"
        self.which.options = options          # selects the first image (or none)
        self._render()

    def show_run(self, run) -> None:
        self.show(run.images, run.image_paths, run.seeds, run.run_id)

    @property
    def index(self) -> int:
        return self.which.value or 0

    def parameters(self) -> str:
        """The chosen image's A1111 infotext, read from its PNG (what other tools will read)."""
        from PIL import Image

        if self.index >= len(self.paths) or not self.paths[self.index].is_file():
            return ""
        with Image.open(self.paths[self.index]) as im:
            return str(getattr(im, "text", {}).get("parameters", ""))

    def _render(self) -> None:
        has = self.index < len(self.images)
        for button in (self.to_img2img, self.to_control, self.reuse_seed):
            button.disabled = not has
        path = self.paths[self.index] if has and self.index < len(self.paths) else None
        if path is None or not path.is_file():
            self.save.value = self.copy.value = ""
            self.infotext.value, self.infotext.layout.display = "", "none"
            return
        name = html.escape(f"{self.run_id or path.stem}-{self.index}.png" if self.run_id else path.name)
        data = base64.b64encode(path.read_bytes()).decode()
        self.save.value = (f'<a class="sdw-save jupyter-button" download="{name}" href="data:image/png;base64,{data}" '
                           f'style="padding:4px 10px;text-decoration:none">Save PNG</a>')
        text = self.parameters()
        self.infotext.value, self.infotext.layout.display = text, ""
        # json.dumps makes a JS string literal; html.escape keeps it inside the attribute
        js = html.escape(f"navigator.clipboard.writeText({json.dumps(text)})", quote=True)
        self.copy.value = (f'<button class="sdw-copy jupyter-button" onclick="{js}" '
                           f'title="A1111 parameters text">Copy parameters</button>')

    # ---- handlers --------------------------------------------------------------------------
    def _chosen(self, _change) -> None:
        self._render()

    def _emit(self, kind: str, value) -> None:
        for callback in list(self._listeners[kind]):
            callback(value)

    def _img2img_clicked(self, _button) -> None:
        if self.index < len(self.images):
            self._emit("img2img", self.images[self.index])

    def _control_clicked(self, _button) -> None:
        if self.index < len(self.images):
            self._emit("control", self.images[self.index])

    def _seed_clicked(self, _button) -> None:
        if self.index < len(self.seeds):
            self._emit("seed", int(self.seeds[self.index]))

    def close(self) -> None:
        for listeners in self._listeners.values():
            listeners.clear()
        super().close()
