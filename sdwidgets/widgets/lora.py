"""LoRA panel: add LoRAs (bundled, file, folder), one strength slider and on/off toggle each.

Strengths are sent with the next run (`loras={name: strength}`); moving a slider loads nothing.
"""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from .base import Panel, close_tree, message, short_error

_style = {"description_width": "70px"}


class LoraRow:
    def __init__(self, name: str, strength: float = 1.0, info=None):
        self.name = name
        self.enabled = W.Checkbox(value=True, description="", indent=False, layout=W.Layout(width="30px"))
        self.strength = W.FloatSlider(value=strength, min=-2.0, max=2.0, step=0.05, description=name,
                                      continuous_update=False, style={"description_width": "100px"},
                                      layout=W.Layout(width="360px"))
        self.remove = W.Button(icon="trash", tooltip=f"remove {name}", layout=W.Layout(width="40px"))
        words = ", ".join(info.trigger_words[:5]) if info is not None else ""
        self.root = W.HBox([self.enabled, self.strength, self.remove,
                            W.HTML(f'<span style="font-size:11px;color:#555">{html.escape(words)}</span>')])


class LoraPanel(Panel):
    """`loras()` is the dict for Session.generate(loras=...). `on_release(cb)`: cb() after a slider
    is released with "regenerate on release" ticked."""

    def __init__(self, session, model: str | None = None):
        super().__init__()
        self.session = session
        self.model = model
        self.rows: dict[str, LoraRow] = {}
        self.available = W.Dropdown(options=[], description="LoRA", style=_style, layout=W.Layout(width="260px"))
        self.add = W.Button(description="Add", icon="plus", layout=W.Layout(width="70px"))
        self.path = W.Text(placeholder=".safetensors file or folder", layout=W.Layout(width="300px"))
        self.load = W.Button(description="Load file/folder", layout=W.Layout(width="130px"))
        self.regenerate = W.Checkbox(value=False, description="regenerate on release", indent=False)
        self.box = W.VBox()
        self.status = W.HTML()
        self._listeners: list = []
        self.on_click(self.add, self._add_clicked)
        self.on_click(self.load, self._load_clicked)
        self.root = W.VBox([W.HBox([self.available, self.add]), W.HBox([self.path, self.load]), self.box,
                            self.regenerate, self.status])
        self.refresh()

    def refresh(self, model: str | None = None) -> None:
        """Re-list the LoRAs usable with `model` (bundled with it, or loaded into the session)."""
        if model is not None:
            self.model = model or None
        try:
            names = sorted(self.session.loras(self.model))
        except Exception as exc:  # noqa: BLE001 - e.g. the model cannot be resolved yet: say so, stay usable
            self.available.options = []
            self.status.value = message(short_error(exc), "error")
            return
        self.available.options = names
        if self.available.value not in names:
            self.available.value = names[0] if names else None
        self.status.value = "" if names else message("no LoRAs yet: load a .safetensors file or folder")

    def loras(self) -> dict:
        return {name: row.strength.value for name, row in self.rows.items() if row.enabled.value}

    def add_lora(self, name: str, strength: float = 1.0) -> LoraRow:
        if name in self.rows:
            return self.rows[name]
        row = LoraRow(name, strength, self.session.loras(self.model).get(name))
        row.strength.observe(self._strength_released, names="value")
        row.enabled.observe(self._strength_released, names="value")    # on/off also regenerates when asked
        row.remove.on_click(self._remove_clicked)
        self.rows[name] = row
        self.box.children = [r.root for r in self.rows.values()]
        return row

    def set_loras(self, loras) -> None:
        """Exactly these (name, strength) pairs, on (a log row's LoRAs); regenerates nothing."""
        listening, self._listeners = self._listeners, []
        try:
            for name in [n for n in self.rows if n not in dict(loras)]:
                self._release_row(self.rows.pop(name))
            for name, strength in loras:
                row = self.add_lora(name, strength)
                row.strength.value, row.enabled.value = strength, True
            self.box.children = [r.root for r in self.rows.values()]
        finally:
            self._listeners = listening

    def on_release(self, callback) -> None:
        self._listeners.append(callback)

    # ---- handlers --------------------------------------------------------------------------
    def _add_clicked(self, _button) -> None:
        if self.available.value:
            self.add_lora(self.available.value)

    def _load_clicked(self, _button) -> None:
        path = Path(self.path.value.strip()).expanduser()
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        try:
            if not files:
                raise ValueError(f"no .safetensors files in {path}")
            infos = [self.session.load_lora(f) for f in files]
        except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
            self.status.value = message(short_error(exc), "error")
            return
        self.refresh()
        for info in infos:
            self.add_lora(info.name)
        self.status.value = message(f"loaded {', '.join(i.name for i in infos)}", "ok")

    def _strength_released(self, _change) -> None:
        if self.regenerate.value:
            for callback in list(self._listeners):
                callback()

    def _remove_clicked(self, button) -> None:
        for name in [n for n, r in self.rows.items() if r.remove is button]:
            row = self.rows.pop(name)
            self._release_row(row)
        self.box.children = [r.root for r in self.rows.values()]

    def _release_row(self, row: LoraRow) -> None:
        row.strength.unobserve(self._strength_released, names="value")
        row.enabled.unobserve(self._strength_released, names="value")
        row.remove.on_click(self._remove_clicked, remove=True)
        close_tree(row.root)

    def close(self) -> None:
        for row in self.rows.values():
            self._release_row(row)
        self.rows.clear()
        self._listeners.clear()
        super().close()
