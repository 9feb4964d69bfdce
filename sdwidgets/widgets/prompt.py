"""Prompt panel: prompt, negative prompt, seed, steps, CFG, size, sampler, images, model, Generate/Stop."""
from __future__ import annotations

import ipywidgets as W

from ..models import BUILTIN_MODELS
from ..schedulers import SAMPLER_NAMES
from .base import Panel, hold, message

SIZES = [("native", 0), ("64", 64), ("128", 128), ("256", 256), ("512", 512), ("768", 768), ("1024", 1024)]


def _wide() -> W.Layout:
    """A fresh Layout each time: a module-level Layout would be shared, and closed with the first panel."""
    return W.Layout(width="100%")


_style = {"description_width": "80px"}


class PromptPanel(Panel):
    """Everything a run needs from the user. `values()` gives Session.generate keyword arguments."""

    def __init__(self, prompt: str = "", steps: int = 20, guidance_scale: float = 5.0):
        super().__init__()
        self.prompt = W.Textarea(value=prompt, placeholder="prompt", description="Prompt", rows=3,
                                 layout=_wide(), style=_style)
        self.negative_prompt = W.Textarea(placeholder="negative prompt", description="Negative", rows=2,
                                          layout=_wide(), style=_style)
        self.seed = W.IntText(value=1, description="Seed", style=_style, layout=W.Layout(width="200px"))
        self.random_seed = W.Checkbox(value=False, description="random", indent=False, layout=W.Layout(width="80px"))
        self.reuse_seed = W.Button(description="reuse last", tooltip="the seed of the last run",
                                   layout=W.Layout(width="90px"), disabled=True)
        self.steps = W.IntSlider(value=steps, min=1, max=150, description="Steps", style=_style, layout=_wide())
        self.guidance_scale = W.FloatSlider(value=guidance_scale, min=0.0, max=20.0, step=0.5, description="CFG",
                                            style=_style, layout=_wide())
        # ipywidgets shows a None value as an empty box: 0 / "" stand for "model default" here
        self.width = W.Dropdown(options=SIZES, value=0, description="Width", style=_style,
                                layout=W.Layout(width="170px"))
        self.height = W.Dropdown(options=SIZES, value=0, description="Height", style=_style,
                                 layout=W.Layout(width="170px"))
        self.scheduler = W.Dropdown(options=[("model default", "")] + [(n, n) for n in SAMPLER_NAMES], value="",
                                    description="Sampler", style=_style)
        self.num_images = W.BoundedIntText(value=1, min=1, max=16, description="Images", style=_style,
                                           layout=W.Layout(width="170px"))
        self.model = W.Combobox(value="", options=list(BUILTIN_MODELS), placeholder="session default",
                                description="Model", style=_style, ensure_option=False)
        self.generate = W.Button(description="Generate", button_style="primary", icon="play")
        self.stop = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status = W.HTML(value="")
        self.last_seed: int | None = None
        self.on_click(self.reuse_seed, self._reuse_last_seed)
        self.observe(self.random_seed, self._random_toggled)
        self.root = W.VBox([
            self.prompt, self.negative_prompt,
            W.HBox([self.seed, self.random_seed, self.reuse_seed]),
            self.steps, self.guidance_scale,
            W.HBox([self.width, self.height, self.num_images]),
            W.HBox([self.scheduler, self.model]),
            W.HBox([self.generate, self.stop]), self.status,
        ], layout=W.Layout(width="100%"))

    # ---- reading and writing --------------------------------------------------------------
    def values(self) -> dict:
        """Keyword arguments for Session.generate (without LoRAs and controls)."""
        return dict(prompt=self.prompt.value, negative_prompt=self.negative_prompt.value,
                    seed=None if self.random_seed.value else self.seed.value, steps=self.steps.value,
                    guidance_scale=self.guidance_scale.value, width=self.width.value or None,
                    height=self.height.value or None, scheduler=self.scheduler.value or None,
                    num_images=self.num_images.value, model=self.model.value.strip() or None)

    def fill(self, params) -> None:
        """Show a GenerationParams (e.g. a log row) in the fields."""
        with hold(self.steps, self.guidance_scale, self.width, self.height):
            self.prompt.value = params.prompt
            self.negative_prompt.value = params.negative_prompt
            if params.seed is not None:
                self.seed.value = int(params.seed)
                self.random_seed.value = False
            self.steps.max = max(self.steps.max, params.steps)
            self.steps.value = params.steps
            self.guidance_scale.max = max(self.guidance_scale.max, params.guidance_scale)
            self.guidance_scale.value = params.guidance_scale
            for widget, value in ((self.width, params.width or 0), (self.height, params.height or 0)):
                if value not in [v for _, v in widget.options]:
                    widget.options = sorted(widget.options + ((str(value), value),), key=lambda o: o[1])
                widget.value = value
            self.scheduler.value = params.scheduler if params.scheduler in SAMPLER_NAMES else ""
            self.num_images.value = params.num_images
            self.model.value = params.model or ""

    def set_running(self, running: bool) -> None:
        self.generate.disabled = running
        self.stop.disabled = not running

    def remember_seed(self, seed: int) -> None:
        self.last_seed = seed
        self.reuse_seed.disabled = False
        self.reuse_seed.tooltip = f"use seed {seed} (the last run's)"

    def show(self, text: str, kind: str = "info") -> None:
        self.status.value = message(text, kind) if text else ""

    # ---- handlers (bound methods) ---------------------------------------------------------
    def _reuse_last_seed(self, _button) -> None:
        if self.last_seed is not None:
            self.seed.value = self.last_seed
            self.random_seed.value = False

    def _random_toggled(self, change) -> None:
        self.seed.disabled = change["new"]
