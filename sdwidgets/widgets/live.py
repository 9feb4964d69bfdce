"""Live preview: the predicted clean image every denoising step, a progress bar with steps/s, a gallery.

`on_step` runs on the generating thread: it only sets trait values (never display()), is
throttled to at most one browser update per `min_interval` seconds (the last step always
goes through) and batches each widget's changes into one message (hold_sync).
"""
from __future__ import annotations

import html
import threading
import time

import ipywidgets as W

from ..images import data_url
from .base import PREVIEW_SIZE, Panel, hold, image_value, image_widget, message, short_error

GALLERY_SIZE = 192
LARGE_SIZE = 512
# a click toggles a gallery image between its gallery size and LARGE_SIZE (in the browser, no kernel round trip)
ENLARGE = "this.width = this.width > {small} ? {small} : " + str(LARGE_SIZE)


class LivePreview(Panel):
    def __init__(self, min_interval: float = 0.1, size: int = PREVIEW_SIZE):
        super().__init__()
        self.min_interval = min_interval
        self.image = image_widget(size)
        self.image.add_class("sdw-live-image")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width=f"{size}px"))
        self.rate = W.HTML(value="")
        self.gallery = W.HTML(value="")
        self.exact = W.Checkbox(value=False, indent=False, description="exact previews (VAE decode each step)",
                                tooltip="the approximate latent preview costs microseconds; a VAE decode is exact "
                                        "but slower on big models")
        self.frames_shown = 0          # preview images sent to the browser during the current run
        self.steps_seen = 0            # steps reported during the current run
        self.images: list = []         # the last run's final images
        self.error: Exception | None = None   # the last display error (the run is never stopped by one)
        self._lock = threading.Lock()
        self._num_images = 1
        self._index, self._count = 0, 0     # image being denoised, steps seen of it
        self._t0 = time.perf_counter()
        self._last_sent = float("-inf")
        self.root = W.VBox([self.image, self.progress, self.rate, self.exact, self.gallery])

    def start(self, total_steps: int, num_images: int = 1, loading: bool = False) -> None:
        """A run begins: reset the bar (called on the main thread before the run starts).
        `loading`: the model loads first, which the status line says (it takes seconds)."""
        with self._lock:
            self._t0 = time.perf_counter()
            self._last_sent = float("-inf")
            self.frames_shown = self.steps_seen = 0
            self._num_images = max(1, num_images)
            self._index, self._count = 0, 0
        with hold(self.progress, self.rate):
            self.progress.max, self.progress.value = max(1, total_steps * self._num_images), 0
            self.progress.bar_style = "info"
            self.rate.value = message("loading model (first run)…" if loading else f"0/{total_steps} steps")

    def on_step(self, recorder) -> None:
        """StepRecorder listener (generating thread). A display problem never stops the run."""
        try:
            self._on_step(recorder)
        except Exception as exc:  # noqa: BLE001 - shown, and the run goes on
            self.error = exc
            self.rate.value = message(f"preview: {short_error(exc)}", "error")

    def _on_step(self, recorder) -> None:
        """A run's images are denoised in batches; recorder.image_index/batch_count say which."""
        now = time.perf_counter()
        total, index = recorder.total_steps, getattr(recorder, "image_index", 0)
        with self._lock:
            self.steps_seen += 1
            if self.steps_seen == 1:    # steps/s from the first step on: loading time is not denoising
                self._t0 = now - (recorder.step_times[-1] if recorder.step_times else 0.0)
            # recorder.steps lists the first image's steps; later images record the same ones
            self._count = self._count + 1 if index == self._index else 1
            self._index = index
            step = recorder.steps[min(self._count, len(recorder.steps)) - 1]
            if step < total and now - self._last_sent < self.min_interval:
                return
            self._last_sent = now
            self.frames_shown += 1
            images = max(self._num_images, index + 1)
        latest = self._exact_frame(recorder, step) if self.exact.value else None
        latest = latest if latest is not None else recorder.latest
        value = image_value(latest) if latest is not None else None
        count = getattr(recorder, "batch_count", 1)     # images denoised together in this call
        done = index * total + min(step, total) * count
        rate = done / max(now - self._t0, 1e-9)
        which = f"{index + 1}" if count == 1 else f"{index + 1}-{index + count}"
        of_image = f" · image {which}/{images}" if images > 1 else ""
        with hold(self.image, self.progress, self.rate):
            if value is not None:
                self.image.value = value
            self.progress.max = max(1, total * images)
            self.progress.value = min(done, self.progress.max)
            self.rate.value = message(f"{step}/{total} steps{of_image} · {rate:.1f} steps/s")

    def decode_every(self) -> int | None:
        """Session.generate(decode_every=...) for the current choice."""
        return 1 if self.exact.value else None

    @staticmethod
    def _exact_frame(recorder, step: int):
        """The newest VAE decode at or before `step` (the batch so far side by side), if any."""
        decoded = recorder.decoded_frames
        done = [k for k in decoded if k <= step]
        return decoded[max(done)] if done else None

    def finish(self, run) -> None:
        """Show the run's final images (any thread)."""
        self.images = list(run.images)
        steps = len(run.step_times)       # steps denoised, all images together
        rate = steps / run.duration_s if run.duration_s else 0.0
        kind = "ok" if run.status == "ok" else "error"
        with hold(self.progress, self.image, self.rate, self.gallery):
            self.progress.bar_style = "success" if run.status == "ok" else "warning"
            if run.status == "ok":
                self.progress.value = self.progress.max
            if run.images:
                self.image.value = image_value(run.images[0] if len(run.images) == 1 else run.grid())
            self.rate.value = message(f"{run.status} · {steps} steps in {run.duration_s:.2f}s · {rate:.1f} steps/s",
                                      kind)
            self.gallery.value = gallery_html(run)

    def fail(self, text: str) -> None:
        with hold(self.progress, self.rate):
            self.progress.bar_style = "danger"
            self.rate.value = message(text, "error")


def gallery_html(run) -> str:
    size = GALLERY_SIZE if len(run.images) <= 2 else GALLERY_SIZE * 2 // 3
    cells = "".join(
        f'<figure class="sdw-gallery-item" style="margin:4px;display:inline-block;text-align:center">'
        f'<img src="{data_url(im, size)}" width="{size}" style="image-rendering:pixelated;cursor:zoom-in"'
        f' title="seed {seed}: click to enlarge" onclick="{ENLARGE.format(small=size)}"/>'
        f'<figcaption style="font-size:11px">seed {seed}</figcaption></figure>'
        for im, seed in zip(run.images, run.seeds, strict=False))
    caption = f'<div style="font-family:monospace;font-size:11px">{html.escape(run.caption())}</div>'
    return f'<div class="sdw-gallery">{cells}{caption}</div>'
