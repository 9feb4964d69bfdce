"""The compact view of log rows that `%sd log` shows: a thumbnail and the settings people scan
for (short id, prompt, seed, sampler, steps, CFG, LoRAs, time). `.df` is the full DataFrame."""
from __future__ import annotations

import html
import json
from pathlib import Path

from .images import data_url
from .run import shorten

# column -> (header, how a row's value is shown)
COMPACT = {
    "run_id": ("id", lambda v: str(v)[-8:]),
    "prompt": ("prompt", lambda v: shorten(str(v), 60)),
    "seed": ("seed", str),
    "scheduler": ("sampler", str),
    "steps": ("steps", str),
    "guidance_scale": ("CFG", lambda v: f"{v:g}" if isinstance(v, (int, float)) else str(v)),
    "loras": ("LoRAs", lambda v: ", ".join(f"{n}:{s:g}" for n, s in _loras(v).items()) or "—"),
    "duration_s": ("time", lambda v: f"{v:.2f} s" if isinstance(v, (int, float)) else "—"),
}


def _loras(value) -> dict:
    try:
        loras = json.loads(value) if isinstance(value, str) else (value or {})
    except json.JSONDecodeError:
        return {}
    return {str(k): float(s) for k, s in loras.items() if isinstance(s, (int, float))} if isinstance(loras, dict) else {}


class LogTable:
    """Rows of an ExperimentLog, compact. Displays as an HTML table with thumbnails."""

    def __init__(self, df, log_dir, thumb: int = 48):
        self.df, self.dir, self.thumb = df, Path(log_dir), thumb

    def rows(self) -> list[dict]:
        """The shown values, row by row (header -> text)."""
        return [{header: show(row.get(col)) for col, (header, show) in COMPACT.items()}
                for row in self.df.to_dict("records")]

    def _thumb(self, image_path) -> str:
        from PIL import Image

        if not isinstance(image_path, str) or not image_path:
            return ""
        path = (self.dir / image_path).resolve()
        if not path.is_relative_to(self.dir.resolve()) or not path.is_file():
            return ""       # a record never makes us read outside its log folder
        try:
            with Image.open(path) as im:
                im.thumbnail((self.thumb, self.thumb))
                return f'<img src="{data_url(im.convert("RGB"), self.thumb)}" style="image-rendering:pixelated"/>'
        except OSError:
            return ""

    def _repr_html_(self) -> str:
        heads = "".join(f"<th>{html.escape(h)}</th>" for h, _ in [("", None), *COMPACT.values()])
        body = ""
        for record, shown in zip(self.df.to_dict("records"), self.rows()):
            cells = "".join(f'<td style="white-space:nowrap">{html.escape(v)}</td>' for v in shown.values())
            body += f"<tr><td>{self._thumb(record.get('image_path'))}</td>{cells}</tr>"
        return (f'<table class="sdw-log">{heads and f"<tr>{heads}</tr>"}{body}</table>'
                f'<div style="font-size:11px;color:#666">{len(self.df)} row(s); '
                "<code>%sd log N --all</code> for every column</div>")

    def __repr__(self) -> str:
        import pandas as pd

        return pd.DataFrame(self.rows()).to_string(index=False) if len(self.df) else "(no runs yet)"

    def __len__(self) -> int:
        return len(self.df)
