"""Step scrubber: after a run, every step's preview on a slider, with a Play button linked in the browser."""
from __future__ import annotations

import ipywidgets as W

from .base import PREVIEW_SIZE, Panel, image_value, image_widget

VIEWS = [("predicted clean (x0)", "x0"), ("noisy latent", "noisy"), ("x0, VAE-decoded", "decoded")]


class StepScrubber(Panel):
    """`show_run(run)` loads a run's frames; the slider (or Play) picks the step shown."""

    def __init__(self, size: int = PREVIEW_SIZE, interval_ms: int = 150):
        super().__init__()
        self.image = image_widget(size)
        # max 0 until a run is loaded: nothing to scrub
        self.slider = W.IntSlider(value=0, min=0, max=0, description="Step", readout=False,
                                  layout=W.Layout(width=f"{size + 60}px"))
        self.play = W.Play(value=0, min=0, max=0, interval=interval_ms)
        # Play drives the slider in the browser, no round trip through the kernel per frame.
        self.link = W.jslink((self.play, "value"), (self.slider, "value"))
        self.view = W.ToggleButtons(options=VIEWS[:2], value="x0", style={"button_width": "170px"})
        self.info = W.HTML(value="")
        self.info.add_class("sdw-scrubber-info")
        self.run = None
        self._cache: dict = {}
        self.observe(self.slider, self._render)
        self.observe(self.view, self._render)
        self.root = W.VBox([W.HBox([self.play, self.slider]), self.view, self.image, self.info])
        self.root.add_class("sdw-scrubber")

    @property
    def frames(self) -> list:
        if self.run is None:
            return []
        x0, noisy = self.run.frames, self.run.noisy_frames
        if self.view.value == "decoded" and self.run.decoded_frames:
            decoded = self.run.decoded_frames       # step -> image, for the steps that were decoded
            return [decoded.get(step) for step in self.run.steps]
        return (x0 or noisy) if self.view.value != "noisy" else (noisy or x0)

    def show_run(self, run) -> None:
        """Load a run's step previews (any thread); shows the last step."""
        self.run, self._cache = run, {}
        self.view.options = VIEWS if run.decoded_frames else VIEWS[:2]   # keeps the value if still offered
        count = len(run.frames or run.noisy_frames)
        last = max(0, count - 1)
        # max and value go in separate messages: a browser slider that gets both at once keeps its old value
        self.slider.max = self.play.max = last
        if self.slider.value == last:
            self._render()
        self.slider.value = self.play.value = last

    def clear(self) -> None:
        self.run, self._cache = None, {}
        self.slider.value = self.play.value = 0
        self.slider.max = self.play.max = 0
        self.info.value = ""

    def close(self) -> None:
        self.link.close()
        super().close()

    def _render(self, _change=None) -> None:
        frames = self.frames
        if not frames:
            self.info.value = "<i>no step previews</i>" if self.run is not None else ""
            return
        i = min(self.slider.value, len(frames) - 1)
        key = (self.view.value, i)
        if frames[i] is None:                     # a step without a VAE decode (decode_every > 1)
            self.info.value = f"<i>step {self.run.steps[i]} was not decoded</i>"
            return
        if key not in self._cache:
            self._cache[key] = image_value(frames[i])
        run = self.run
        step = run.steps[i] if i < len(run.steps) else i + 1
        t = run.timesteps[i] if i < len(run.timesteps) else None
        sigma = run.sigmas[i] if i < len(run.sigmas) else None
        parts = [f"step {step}/{run.steps[-1] if run.steps else len(frames)}"]
        if t is not None:
            parts.append(f"timestep {t:g}")
        if sigma is not None:
            parts.append(f"sigma {sigma:.4g}")
        if getattr(run, "preview_method", "") and self.view.value == "x0":
            parts.append(f"preview {run.preview_method}")
        self.image.value = self._cache[key]
        self.info.value = '<span style="font-family:monospace;font-size:12px">' + " · ".join(parts) + "</span>"
