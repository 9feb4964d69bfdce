"""Run: what one generation produced; every front-end displays it, the log stores it."""
from __future__ import annotations

import html
from dataclasses import dataclass, field

from .images import data_url, grid
from .params import GenerationParams


@dataclass
class Run:
    run_id: str
    params: GenerationParams          # seed resolved: image i used seed + i
    images: list = field(default_factory=list)
    frames: list = field(default_factory=list)          # x0 previews, one per recorded step
    noisy_frames: list = field(default_factory=list)    # noisy-latent previews
    decoded_frames: dict = field(default_factory=dict)  # step -> exact VAE decode
    steps: list = field(default_factory=list)           # step number of each frame
    timesteps: list = field(default_factory=list)
    sigmas: list = field(default_factory=list)
    status: str = "ok"                # ok | interrupted | failed
    duration_s: float = 0.0
    step_times: list = field(default_factory=list)
    preview_seconds: float = 0.0
    preview_method: str = ""            # how frames were made: tiny | approx | full | none
    sampler: str = ""
    model_name: str = ""
    pipeline_class: str = ""
    image_paths: list = field(default_factory=list)
    nsfw: list | None = None
    error: str | None = None
    tags: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)       # e.g. a prompt cut by the text encoder (sdwidgets.modes.prompts)

    @property
    def seeds(self) -> list[int]:
        return [self.params.seed + i for i in range(self.params.num_images)]

    @property
    def image(self):
        return self.images[0] if self.images else None

    def grid(self, cols: int | None = None):
        return grid(self.images, cols=cols)

    def shaped_by(self) -> list[str]:
        """What besides the prompt shaped the images, briefly: negative prompt, LoRAs, controls, img2img."""
        p = self.params
        parts = [f"negative: {shorten(p.negative_prompt, 40)}"] if p.negative_prompt else []
        parts += [f"LoRA {name} {strength:g}" for name, strength in p.loras]
        parts += [f"{c.kind} control {c.scale:g}" for c in p.controls]
        if p.init_image is not None:
            parts.append(f"img2img strength {p.strength:g}")
        return parts

    def caption(self) -> str:
        p = self.params
        state = "" if self.status == "ok" else f" · {self.status.upper()}"
        return " · ".join([f"{self.run_id} · seed {p.seed} · {self.sampler} · {p.steps} steps · CFG {p.guidance_scale:g}"
                           f" · {self.duration_s:.2f}s{state}", *self.shaped_by()])

    def _repr_html_(self) -> str:
        if self.images:
            shown, label = self.images, "seed {}"
        else:      # stopped before an image: its last preview, said to be one
            shown, label = self.frames[-1:], "last preview (step {}), not a result".format(self.steps[-1] if self.steps else 0) + " · seed {}"
        size = 256 if shown and max(shown[0].size) < 256 else 0
        cells = "".join(
            f'<figure style="margin:4px;display:inline-block;text-align:center">'
            f'<img src="{data_url(im, size)}" style="image-rendering:pixelated" title="seed {s}"/>'
            f'<figcaption style="font-size:11px">{html.escape(label.format(s))}</figcaption></figure>'
            for im, s in zip(shown, self.seeds))
        error = f'<div style="color:#b00">{html.escape(self.error)}</div>' if self.error else ""
        p = self.params
        full = [f"prompt: {p.prompt}"] + ([f"negative prompt: {p.negative_prompt}"] if p.negative_prompt else [])
        details = "".join(f"<div>{html.escape(line)}</div>" for line in full)
        return (f'<div class="sdw-run"><div>{cells}</div>'
                f'<div style="font-family:monospace;font-size:12px">{html.escape(self.caption())}</div>'
                f'<details style="font-size:12px"><summary>{html.escape(shorten(p.prompt))}</summary>{details}</details>'
                f'{error}</div>')

    def __repr__(self) -> str:
        return f"Run({self.caption()}, {len(self.images)} image(s), {len(self.frames)} frames)"


def shorten(text: str, n: int = 120) -> str:
    """`text` cut to `n` characters, an ellipsis marking the cut."""
    return text if len(text) <= n else text[: n - 1] + "…"
