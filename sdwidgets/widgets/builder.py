"""Prompt builder: subject, style, lighting, composition and quality words composed into a prompt.

The template and its values travel with the run (log columns prompt_template / template_values).
"""
from __future__ import annotations

import ipywidgets as W

from .base import Panel

PRESETS = {
    "style": ["oil painting", "watercolor", "digital art", "photograph", "anime"],
    "lighting": ["golden hour", "studio lighting", "cinematic lighting", "volumetric light"],
    "composition": ["close-up", "wide shot"],
    "quality": ["masterpiece", "best quality", "highly detailed", "sharp focus"],
}
FIELDS = ("subject", "style", "lighting", "composition", "quality")
_style = {"description_width": "80px"}


def compose(values: dict) -> tuple[str, str]:
    """(template, prompt) from field values; empty fields are left out of both."""
    used = [name for name in FIELDS if values.get(name)]
    template = ", ".join("{" + name + "}" for name in used)
    return template, template.format(**{name: values[name] for name in used})


class PromptBuilder(Panel):
    """Fields with presets; `on_compose(callback)` is told (prompt, template, values) on every change."""

    def __init__(self):
        super().__init__()
        self.subject = W.Text(placeholder="a red circle on a blue background", description="Subject",
                              style=_style, layout=W.Layout(width="100%"))
        self.style = W.Combobox(options=PRESETS["style"], placeholder="e.g. watercolor", description="Style",
                                style=_style, ensure_option=False)
        self.lighting = W.Combobox(options=PRESETS["lighting"], placeholder="e.g. golden hour",
                                   description="Lighting", style=_style, ensure_option=False)
        self.composition = W.Combobox(options=PRESETS["composition"], placeholder="e.g. close-up",
                                      description="Composition", style=_style, ensure_option=False)
        self.quality = W.TagsInput(value=[], allowed_tags=PRESETS["quality"], allow_duplicates=False)
        self.result = W.HTML()
        self._listeners: list = []
        for name in FIELDS:
            self.observe(getattr(self, name), self._changed)
        self.root = W.VBox([self.subject, W.HBox([self.style, self.lighting]), self.composition,
                            W.HBox([W.Label("Quality", layout=W.Layout(width="84px")), self.quality]), self.result])

    def values(self) -> dict:
        values = {name: getattr(self, name).value.strip() for name in FIELDS[:-1]}
        values["quality"] = ", ".join(self.quality.value)
        return values

    def composed(self) -> tuple[str, str, dict]:
        """(prompt, template, values) of the current fields."""
        values = self.values()
        template, prompt = compose(values)
        return prompt, template, {k: v for k, v in values.items() if v}

    def on_compose(self, callback) -> None:
        self._listeners.append(callback)

    def close(self) -> None:
        self._listeners.clear()
        super().close()

    def _changed(self, _change) -> None:
        prompt, template, values = self.composed()
        self.result.value = f"<code>{template}</code>" if template else ""
        for callback in list(self._listeners):
            callback(prompt, template, values)
