"""Modes panel: Hires. fix, variation seed, prompt syntax and the detail pass (sdwidgets/modes).

`values()` gives the Session.generate keyword arguments of the modes that are switched on;
`fill(params)` shows a logged run's. Inpainting has its own tab (maskcanvas.MaskCanvas).
"""
from __future__ import annotations

import ipywidgets as W

from ..modes.fields import DEFAULT_HIRES_STRENGTH, HIRES_UPSCALERS, PROMPT_SYNTAXES
from .base import Panel

_style = {"description_width": "110px"}


class ModesPanel(Panel):
    def __init__(self, session=None):
        super().__init__()
        default_syntax = getattr(session, "prompt_syntax", "plain")
        self.prompt_syntax = W.Dropdown(options=list(PROMPT_SYNTAXES), value=default_syntax,
                                        description="Prompt syntax", style=_style)
        self.hires = W.Checkbox(value=False, description="Hires. fix", indent=False)
        self.hires_scale = W.BoundedFloatText(value=2.0, min=1.0, max=8.0, step=0.25, description="Upscale by",
                                              style=_style)
        self.hires_steps = W.BoundedIntText(value=0, min=0, max=150, description="Hires steps (0: same)",
                                            style=_style)
        self.hires_strength = W.FloatSlider(value=DEFAULT_HIRES_STRENGTH, min=0.05, max=1.0, step=0.05,
                                            description="Denoising", style=_style)
        self.hires_upscaler = W.Dropdown(options=list(HIRES_UPSCALERS), value="Lanczos", description="Upscaler",
                                         style=_style)
        self.variation = W.Checkbox(value=False, description="Variation seed", indent=False)
        self.subseed = W.BoundedIntText(value=1, min=0, max=2**32 - 1, description="Variation seed", style=_style)
        self.subseed_strength = W.FloatSlider(value=0.2, min=0.0, max=1.0, step=0.01, description="Strength",
                                              style=_style)
        self.detail = W.Checkbox(value=False, description="Detail pass", indent=False)
        self.detector = W.Combobox(value="shapes", options=["shapes"], description="Detector", style=_style,
                                   ensure_option=False)
        self.detail_prompt = W.Text(placeholder="the run's prompt", description="Detail prompt", style=_style)
        self.detail_strength = W.FloatSlider(value=0.4, min=0.05, max=1.0, step=0.05, description="Denoising",
                                             style=_style)
        self.root = W.VBox([
            self.prompt_syntax,
            self.hires, W.HBox([self.hires_scale, self.hires_steps]), W.HBox([self.hires_strength, self.hires_upscaler]),
            self.variation, W.HBox([self.subseed, self.subseed_strength]),
            self.detail, W.HBox([self.detector, self.detail_strength]), self.detail_prompt,
        ])

    def values(self) -> dict:
        """Session.generate keyword arguments of the modes that are on."""
        out = {"prompt_syntax": self.prompt_syntax.value}
        if self.hires.value:
            out.update(hires_scale=self.hires_scale.value, hires_steps=self.hires_steps.value or None,
                       hires_strength=self.hires_strength.value, hires_upscaler=self.hires_upscaler.value)
        if self.variation.value:
            out.update(subseed=self.subseed.value, subseed_strength=self.subseed_strength.value)
        if self.detail.value:
            out["detail"] = {"detector": self.detector.value.strip(), "strength": self.detail_strength.value,
                             "prompt": self.detail_prompt.value.strip() or None}
        return out

    def fill(self, params) -> None:
        """Show the modes of a GenerationParams (e.g. a log row)."""
        self.prompt_syntax.value = params.prompt_syntax or "plain"
        self.hires.value = params.hires_scale is not None
        if params.hires_scale is not None:
            self.hires_scale.value = params.hires_scale
            self.hires_steps.value = params.hires_steps or 0
            self.hires_strength.value = params.hires_strength
            self.hires_upscaler.value = params.hires_upscaler
        self.variation.value = bool(params.subseed_strength)
        if params.subseed_strength:
            self.subseed.value, self.subseed_strength.value = params.subseed, params.subseed_strength
        self.detail.value = params.detail is not None
        if params.detail is not None:
            self.detector.value = params.detail.detector
            self.detail_strength.value = params.detail.strength
            self.detail_prompt.value = params.detail.prompt or ""
