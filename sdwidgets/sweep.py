"""Parameter sweeps for `%%sd --sweep`: value parsing, the run plan, and the labelled X/Y grid.

One sweep makes a row, two make a grid (the first sweep is X, across; the second is Y, down),
like AUTOMATIC1111's X/Y plot. No torch here: this module only parses and draws.
"""
from __future__ import annotations

import ast
import html
import itertools
from dataclasses import dataclass

from .errors import ParamError
from .images import data_url
from .schedulers import check_sampler
from .validate import parse_int, parse_number

MAX_AXES = 2


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H); both positive multiples of 8."""
    w, sep, h = str(text).lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise ParamError(f"size must be WIDTHxHEIGHT in pixels, e.g. 64x64, got {text!r}")
    width, height = int(w), int(h)
    if width < 8 or height < 8 or width % 8 or height % 8:
        def down(v):
            return max(8, v // 8 * 8)

        def up(v):
            return max(8, -(-v // 8) * 8)
        raise ParamError(f"size: width and height must be multiples of 8, got {text!r} "
                         f"(try {down(width)}x{down(height)} or {up(width)}x{up(height)})")
    return width, height


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# sweep name -> (parser of one value, generate() keyword(s) it sets)
PARAMS = {
    "seed": (lambda v: parse_int(v, "seed", 0), "seed"),
    "steps": (lambda v: parse_int(v, "steps", 1), "steps"),
    "cfg": (lambda v: parse_number(v, "cfg", 0.0), "guidance_scale"),
    "sampler": (check_sampler, "scheduler"),
    "size": (parse_size, ("width", "height")),
    "strength": (lambda v: parse_number(v, "strength", 0.0, 1.0), "strength"),
    "negative": (str, "negative_prompt"),
    "model": (str, "model"),
}
ALIASES = {"guidance_scale": "cfg", "scheduler": "sampler", "negative_prompt": "negative", "seeds": "seed"}
INT_RANGES = {"seed", "steps"}
ACCEPTED = ", ".join(PARAMS) + ", lora:NAME, or a {variable} of the prompt"


@dataclass
class Axis:
    """One swept parameter: its name as typed and its parsed values."""

    name: str
    values: list
    kind: str            # "param" | "lora" | "var" | "prompt" ({a|b} variants: the magic sets the prompt)

    def label(self, value) -> str:
        if self.name == "size":
            value = f"{value[0]}x{value[1]}"
        elif isinstance(value, float):
            value = f"{value:g}"
        return f"{self.name} = {value}"

    def apply(self, kwargs: dict, variables: dict, value) -> None:
        """Set this axis' value into generate() kwargs or the template variables."""
        if self.kind == "prompt":
            return
        if self.kind == "var":
            variables[self.name] = value
        elif self.kind == "lora":
            kwargs["loras"] = {**(kwargs.get("loras") or {}), self.name.split(":", 1)[1]: value}
        else:
            target = PARAMS[self.name][1]
            if isinstance(target, tuple):
                kwargs.update(zip(target, value))
            else:
                kwargs[target] = value


def wildcard_axis(prompts: list[str]) -> Axis:
    """The prompts a cell's {a|b} variants expand to, as a sweep axis (the magic sets each as the prompt)."""
    return Axis("prompt", list(prompts), "prompt")


def split_values(text: str) -> list[str]:
    """'1..4' -> ['1', '2', '3', '4'] is done later; here: comma-separated, empty items dropped."""
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_axis(spec: str, template_names: set[str], max_values: int | None = None) -> Axis:
    """`name=v1,v2,...` (ints also `a..b`) -> Axis; ParamError naming what is accepted.

    The number of values is checked against max_values (and the sweep_values limit) before a
    range is expanded, so `seed=1..300000000` fails at once instead of building the list.
    """
    from .limits import LIMITS, limit

    top = min(limit("sweep_values"), max_values or limit("sweep_values"))
    name, sep, raw = spec.partition("=")
    name = name.strip()
    if not sep or not name or not raw.strip():
        raise ParamError(f"--sweep: expected NAME=v1,v2,... (e.g. cfg=3,5,7 or seed=1..4), got {spec!r}")
    name = ALIASES.get(name, name)
    if name in PARAMS:
        kind, parse = "param", PARAMS[name][0]
    elif name.startswith("lora:") and len(name) > 5:
        kind, parse = "lora", (lambda v: parse_number(v, name, -4.0, 4.0))
    elif name in template_names:
        kind, parse = "var", _literal
    else:
        raise ParamError(f"--sweep: unknown parameter {name!r}; sweepable: {ACCEPTED}")
    values = []
    for item in split_values(raw):
        lo, dots, hi = item.partition("..")
        if dots and (name in INT_RANGES or (kind == "var" and lo.strip().isdigit() and hi.strip().isdigit())):
            start, stop = parse_int(lo, f"--sweep {name} range start", 0), parse_int(hi, f"--sweep {name} range end", 0)
            if stop < start:
                raise ParamError(f"--sweep {name}: range {item!r} is empty (write low..high)")
            if len(values) + stop - start + 1 > top:
                lift = (f"SDMagic.max_runs={max_values} (raise it with %config SDMagic.max_runs = N)"
                        if max_values is not None and max_values <= limit("sweep_values")
                        else f"the {LIMITS['sweep_values'][1]} limit of {top} values")
                raise ParamError(f"--sweep {name}: {len(values) + stop - start + 1} values is more than {lift}")
            values.extend(range(start, stop + 1))
        else:
            try:
                values.append(parse(item))
            except ParamError as exc:
                raise ParamError(f"--sweep {name}: {exc}") from None
    if not values:
        raise ParamError(f"--sweep {name}: no values given")
    return Axis(name, values, kind)


def parse_axes(specs: list[str], template_names: set[str], max_values: int | None = None) -> list[Axis]:
    axes = [parse_axis(s, template_names, max_values) for s in specs]
    if len(axes) > MAX_AXES:
        raise ParamError(f"--sweep: at most {MAX_AXES} sweeps (a row or an X/Y grid), got {len(axes)}")
    if len(axes) == 2 and axes[0].name == axes[1].name:
        raise ParamError(f"--sweep: {axes[0].name!r} is swept twice")
    return axes


def cells(axes: list[Axis]):
    """(x index, y index, {axis: value}) in row-major order: Y rows, X across."""
    x = axes[0].values if axes else [None]
    y = axes[1].values if len(axes) > 1 else [None]
    for (yi, yv), (xi, xv) in itertools.product(enumerate(y), enumerate(x)):
        chosen = {}
        if axes:
            chosen[axes[0].name] = xv
        if len(axes) > 1:
            chosen[axes[1].name] = yv
        yield xi, yi, chosen


class SweepResult(list):
    """The runs of a sweep, in row-major order, displayed as a labelled X/Y grid.

    It is a list of Run (runs not made, after an interrupt, are simply absent);
    `.grid()` draws the labelled grid as one PIL image (to save or share).
    """

    def __init__(self, runs, axes: list[Axis], cell_size: int = 160):
        super().__init__(runs)
        self.axes = axes
        self.cell_size = cell_size

    @property
    def shape(self) -> tuple[int, int]:
        """(columns, rows)."""
        return len(self.axes[0].values), (len(self.axes[1].values) if len(self.axes) > 1 else 1)

    @property
    def status(self) -> str:
        cols, rows = self.shape
        if any(r.status == "failed" for r in self):
            return "failed"
        return "ok" if len(self) == cols * rows and all(r.status == "ok" for r in self) else "interrupted"

    def run_at(self, xi: int, yi: int = 0):
        index = yi * self.shape[0] + xi
        return self[index] if index < len(self) else None

    def caption(self) -> str:
        cols, rows = self.shape
        names = " × ".join(a.name for a in self.axes)
        images = sum(len(r.images) for r in self)
        state = "" if self.status == "ok" else f" · {self.status.upper()} ({len(self)}/{cols * rows} runs)"
        ids = f" · {self[0].run_id} … {self[-1].run_id}" if self else ""
        first = self[0] if self else None
        swept = {a.name for a in self.axes}
        detail = "".join(text for name, text in (("sampler", f" · {first.sampler}"),
                                                  ("steps", f" · {first.params.steps} steps")) if name not in swept) \
            if first else ""
        return (f"sweep {names}: {len(self)} runs · {images} images{detail}"
                f" · {sum(r.duration_s for r in self):.2f}s{ids}{state}")

    @staticmethod
    def cell_label(run, sep: str = " · ") -> str:
        state = "" if run.status == "ok" else f"{sep}{run.status}"
        return f"seed {run.params.seed}{sep}{run.duration_s:.2f}s{state}"

    @staticmethod
    def _picture(run):
        if run.images:
            return run.grid()
        return run.frames[-1] if run.frames else None

    def _repr_html_(self) -> str:
        cols, rows = self.shape
        x = self.axes[0]
        y = self.axes[1] if len(self.axes) > 1 else None
        corner = html.escape(f"{y.name} ↓ · {x.name} →" if y else f"{x.name} →")
        head = "".join(f"<th>{html.escape(x.label(v))}</th>" for v in x.values)
        body = ""
        for yi in range(rows):
            row_title = html.escape(y.label(y.values[yi])) if y else ""
            tds = ""
            for xi in range(cols):
                run = self.run_at(xi, yi)
                picture = self._picture(run) if run is not None else None
                if picture is None:
                    tds += '<td style="color:#888;text-align:center">not run</td>'
                    continue
                tds += (f'<td style="text-align:center;padding:4px"><img src="{data_url(picture, self.cell_size)}" '
                        f'style="image-rendering:pixelated"/><div style="font-size:11px">'
                        f'{html.escape(self.cell_label(run))}</div></td>')
            body += f"<tr><th style='text-align:right'>{row_title}</th>{tds}</tr>"
        prompt = html.escape(self[0].params.prompt) if self else ""
        return (f'<div class="sdw-sweep"><table><tr><th>{corner}</th>{head}</tr>{body}</table>'
                f'<div style="font-family:monospace;font-size:12px">{html.escape(self.caption())}</div>'
                f'<div style="font-size:12px">{prompt}</div></div>')

    def __repr__(self) -> str:
        return f"SweepResult({self.caption()})"

    def grid(self, cell_size: int | None = None, pad: int = 4):
        """The labelled grid as one PIL image: X values across the top, Y values down the left."""
        from PIL import Image, ImageDraw

        from .images import upscale

        cols, rows = self.shape
        size = cell_size or self.cell_size
        pictures = [[self._picture(r) if (r := self.run_at(xi, yi)) is not None else None for xi in range(cols)]
                    for yi in range(rows)]
        scaled = [[upscale(p, size) if p is not None else None for p in row] for row in pictures]
        cw = max([p.width for row in scaled for p in row if p is not None] or [size])
        ch = max([p.height for row in scaled for p in row if p is not None] or [size])
        line = 14
        top, left = line * 2, (7 * max(len(self.axes[1].label(v)) for v in self.axes[1].values) + 8 if
                               len(self.axes) > 1 else 0)
        out = Image.new("RGB", (left + cols * (cw + pad), top + rows * (ch + line + pad)), "white")
        draw = ImageDraw.Draw(out)
        draw.text((2, 2), " x ".join(a.name for a in self.axes), fill="black")   # ASCII: PIL's default font
        for xi, v in enumerate(self.axes[0].values):
            draw.text((left + xi * (cw + pad) + 2, line), self.axes[0].label(v), fill="black")
        for yi in range(rows):
            y0 = top + yi * (ch + line + pad)
            if len(self.axes) > 1:
                draw.text((2, y0 + ch // 2), self.axes[1].label(self.axes[1].values[yi]), fill="black")
            for xi in range(cols):
                x0 = left + xi * (cw + pad)
                run = self.run_at(xi, yi)
                if scaled[yi][xi] is not None:
                    out.paste(scaled[yi][xi], (x0, y0))
                    draw.text((x0 + 2, y0 + ch + 1), self.cell_label(run, ", "), fill="black")
        return out
