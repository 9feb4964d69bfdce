"""Seed travel: frames that walk from one seed's image to the next through variation seeds.

Frame k between seeds a and b is the run seed=a, subseed=b, subseed_strength=k/steps (the slerp
of the two noises), so every frame is an ordinary logged run that reruns bit for bit. The result
is a filmstrip (one image) or an animated GIF.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ParamError
from ..validate import check_int


@dataclass
class Travel:
    runs: list = field(default_factory=list)

    @property
    def images(self) -> list:
        return [r.image for r in self.runs if r.image is not None]

    def filmstrip(self, cols: int | None = None):
        from ..images import grid

        return grid(self.images, cols=cols)

    def save_gif(self, path, ms_per_frame: int = 120) -> str:
        first, *rest = self.images
        first.save(path, save_all=True, append_images=rest, duration=ms_per_frame, loop=0)
        return str(path)

    def _repr_html_(self) -> str:
        from ..images import data_url

        return f'<img src="{data_url(self.filmstrip(), 256)}" style="image-rendering:pixelated"/>'


def seed_travel(session, prompt: str, seeds, frames: int = 8, tags: dict | None = None, **kwargs) -> Travel:
    """Walk through `seeds` (two or more), `frames` steps from each seed to the next; logged runs."""
    seeds = [check_int("seeds", s, 0) for s in seeds]
    if len(seeds) < 2:
        raise ParamError(f"seeds: seed travel needs at least two seeds, got {seeds!r}")
    frames = check_int("frames", frames, 2, 240)
    for name in ("seed", "subseed", "subseed_strength", "num_images"):
        if name in kwargs:
            raise ParamError(f"{name}: seed travel sets it per frame; pass seeds=[...] and frames=N")
    travel = Travel()
    plan = [(a, b, k / frames) for a, b in zip(seeds, seeds[1:]) for k in range(frames)] + [(seeds[-1], seeds[-1], 0.0)]
    for i, (a, b, strength) in enumerate(plan):
        run = session.generate(prompt, seed=a, subseed=b if strength else None, subseed_strength=strength,
                               tags={**(tags or {}), "travel": {"seeds": seeds, "frame": i}}, **kwargs)
        travel.runs.append(run)
        if run.status != "ok":
            break
    return travel
