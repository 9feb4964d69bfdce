"""Load parameters from an image: a file upload that fills the prompt panel.

The file is a stranger's: it is read by GenerationParams.from_png (sdwidgets.image_import),
and what could not be carried over is shown as a note, never guessed.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import ipywidgets as W

from ..errors import ParamError, ParamWarning
from .base import Panel, message, short_error


class ImageImportPanel(Panel):
    """Listener: `on_params(cb)` -> cb(GenerationParams) after an image was read."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Load from image",
                                   tooltip="read the parameters of an image (sdwidgets, A1111/Forge, ComfyUI, "
                                           "InvokeAI, NovelAI, Fooocus)", layout=W.Layout(width="170px"))
        self.status = W.HTML(value="")
        self._listeners: list = []
        self.observe(self.upload, self._uploaded)
        self.root = W.HBox([self.upload, self.status])

    def on_params(self, callback) -> None:
        self._listeners.append(callback)

    def load(self, name: str, content: bytes):
        """Read parameters from an image's bytes; shows the result and notifies listeners. Returns the params."""
        from ..params import GenerationParams

        suffix = Path(name).suffix.lower() if Path(name).suffix else ".png"
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(content)
            try:
                params = GenerationParams.from_png(path)
            except ParamError as exc:
                self.status.value = message(f"{name}: " + short_error(exc).replace(str(path) + ": ", ""), "error")
                return None
        notes = [str(w.message).replace(str(path) + ": ", "") for w in caught if issubclass(w.category, ParamWarning)]
        if params.model is not None:
            try:
                self.session.resolve(params.model)
            except ParamError:
                notes.append(f"model {params.model!r} is not available here; the session default is used")
                params = params.replace(model=None)
        for callback in list(self._listeners):
            callback(params)
        text = f"loaded {name}" + (f" · {'; '.join(notes)}" if notes else "")
        self.status.value = message(text, "info" if notes else "ok")
        return params

    def _uploaded(self, change) -> None:
        files = change["new"]
        if not files:
            return
        first = files[0]
        try:
            self.load(first["name"], bytes(first["content"]))
        except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
            self.status.value = message(short_error(exc), "error")

    def close(self) -> None:
        self._listeners.clear()
        super().close()
