"""The `%%sd` option line and prompt templates: parsing only, no model work, no IPython display.

`{name}` expansion from the notebook namespace (template_fields, expand), the argparse
parser of the option line (PARSER, parse_line), the --lora / --control / --init values,
and the settings of a pasted AUTOMATIC1111 parameters line (pasted_settings, which
reuses sdwidgets.params for the A1111 field rules).
"""
from __future__ import annotations

import argparse
import ast
import json
import shlex
from dataclasses import dataclass, field

from IPython.utils.text import FullEvalFormatter

from .errors import ParamError
from .sweep import parse_size
from .validate import did_you_mean, parse_int, parse_number

# ---- what a %%sd cell will run ----------------------------------------------------------------


@dataclass
class Plan:
    """The runs a `%%sd` cell asks for, validated, before anything is generated."""

    params: list                      # GenerationParams per run, validated
    tags: list                        # log tags per run
    labels: list                      # sweep cell labels per run
    axes: list                        # [] or sweep axes
    out: str | None = None
    preview: bool = True
    every: int = 1
    preview_method: str | None = None
    notes: list = field(default_factory=list)


# ---- {name} expansion -----------------------------------------------------------------------


class _RecordingFormatter(FullEvalFormatter):
    """IPython's FullEvalFormatter (what `var_expand` builds on) that also records each field's value.

    We call it directly instead of `shell.var_expand`, which returns the text unchanged on any
    error (a missing variable would silently reach the model) and also expands `$name`.
    """

    def __init__(self):
        self.values: dict = {}
        self._field = None

    def parse(self, format_string):
        for literal, name, spec, conversion in super().parse(format_string):
            self._field = f"{name}:{spec}" if spec else name
            yield literal, name, spec, conversion

    def convert_field(self, value, conversion):
        self.values[self._field] = value
        return super().convert_field(value, conversion)


def template_fields(text: str) -> dict[str, set[str]]:
    """`{expr}` fields of a template -> the free variable names each one reads."""
    import string

    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ParamError(f"prompt: {exc}; write {{{{ and }}}} for literal braces") from None
    fields = {}
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        expr = f"{name}:{spec}" if spec else name
        if not name.strip():
            raise ParamError("prompt: empty {} field; write {{}} for literal braces")
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except SyntaxError:
            raise ParamError(f"prompt: {{{expr}}} is not a Python expression; "
                             "write {{ and }} for literal braces") from None
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        fields[expr] = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound
    return fields


def expand(text: str, namespace: dict, where: str = "prompt") -> tuple[str, dict]:
    """Replace `{expr}` from `namespace` (`{{` stays literal). Returns (text, {field: value}).

    A name that is not defined is a ParamError naming it, never silently left in the prompt.
    """
    import builtins

    fields = template_fields(text)
    if not fields:
        return text.replace("{{", "{").replace("}}", "}"), {}
    for expr, names in fields.items():
        missing = sorted(n for n in names if n not in namespace and not hasattr(builtins, n))
        if missing:
            raise ParamError(f"{where}: {{{expr}}} uses {', '.join(map(repr, missing))}, not defined in the notebook; "
                             f"define it first, or write {{{{{expr}}}}} for literal braces")
    formatter = _RecordingFormatter()
    try:
        result = formatter.vformat(text, args=[], kwargs=dict(namespace))
    except Exception as exc:  # an expression that fails: show the user's error, briefly
        raise ParamError(f"{where}: expanding {{{formatter._field}}} failed: {type(exc).__name__}: {exc}") from None
    return result, {k: _jsonable(v) for k, v in formatter.values.items()}


def fill_template(text: str, values: dict, where: str = "rerun") -> tuple[str, dict]:
    """Fill a stored template's plain `{name}` fields from `values`; nothing is evaluated.

    A template read from a log is data from a stranger: any field that is not a bare name
    (an expression, an attribute, an index, a conversion or a format spec) is refused.
    """
    import string

    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ParamError(f"{where}: the stored prompt template is malformed ({exc})") from None
    out, used = [], {}
    for literal, name, spec, conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            field = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ParamError(f"{where}: the stored prompt template has the field {{{field}}}, which is not a plain "
                             "{name}; a template from a log is never evaluated, so only plain {name} fields can "
                             "be filled (rerun without changing template values, or change prompt=... instead)")
        if name not in values:
            raise ParamError(f"{where}: no value for {{{name}}}; give it as {name}=VALUE")
        used[name] = values[name]
        out.append(str(values[name]))
    return "".join(out), used


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


# ---- the %%sd option line ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ParamError(message)


def _typed(parse, accepted: str):
    def convert(text):
        try:
            return parse(text)
        except (ParamError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
    convert.__name__ = accepted
    return convert


def _positive(text):
    return parse_int(text, "value", 1)


def _non_negative(text):
    return parse_number(text, "value", 0.0)


def _sampler(text):
    from .schedulers import check_sampler

    try:
        return check_sampler(text)
    except ParamError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("scheduler: ")) from None


def _size(text):
    try:
        return parse_size(text)
    except ParamError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("size: ")) from None


def _scale(text):
    return parse_number(str(text).strip().lower().removesuffix("x"), "value", 1.0, 8.0)


def _identifier(text):
    if not text.isidentifier():
        raise ValueError(text)
    return text


def add_mode_arguments(add) -> None:
    """The options of the modes (issue 25), named like A1111's; shared by %%sd and the CLI."""
    add("--mask", metavar="IMAGE", help="inpaint: mask image (white = repaint) with --init; a path or a variable name")
    add("--mask-blur", dest="mask_blur", type=_typed(lambda v: parse_int(v, "value", 0, 64), "an integer in [0, 64]"),
        help="inpaint: blur of the mask in pixels (default 4)")
    add("--inpaint-padding", dest="inpaint_padding", type=_typed(lambda v: parse_int(v, "value", 0), "an integer >= 0"),
        help='inpaint "only masked": the masked area plus this padding, at full resolution')
    add("--hires", type=_typed(_scale, "a scale like 2x or 1.5"), help="Hires. fix: upscale by this factor, then img2img")
    add("--hires-steps", dest="hires_steps", type=_typed(_positive, "a positive integer"),
        help="Hires. fix: steps of the second pass (default: --steps)")
    add("--hires-upscaler", dest="hires_upscaler", choices=["Lanczos", "Latent"], help="Hires. fix: Lanczos or Latent")
    add("--denoise", type=_typed(lambda v: parse_number(v, "value", 0.0, 1.0), "a number in [0, 1]"),
        help="denoising strength of the pass it goes with: --hires, else --mask/--init")
    add("--subseed", type=_typed(lambda v: parse_int(v, "value", 0), "an integer >= 0"), help="variation seed")
    add("--subseed-strength", dest="subseed_strength",
        type=_typed(lambda v: parse_number(v, "value", 0.0, 1.0), "a number in [0, 1]"),
        help="variation strength: 0 the seed's image, 1 the subseed's")
    add("--prompt-syntax", dest="prompt_syntax", choices=["plain", "a1111", "compel"],
        help="plain (CLIP's 77 tokens), a1111 ((word:1.3), BREAK, long prompts) or compel")
    add("--detail", metavar="DETECTOR", help="detail pass: inpaint what DETECTOR finds (shapes, or session.detectors)")
    add("--detail-prompt", dest="detail_prompt", help="detail pass: prompt of the regions (default: the cell's)")
    add("--detail-strength", dest="detail_strength",
        type=_typed(lambda v: parse_number(v, "value", 0.0, 1.0), "a number in [0, 1]"),
        help="detail pass: denoising strength (default 0.4)")


def mode_options(args, ns: dict) -> dict:
    """generate() kwargs of the mode options; --denoise goes with --hires, else with --init (--mask)."""
    out = {"mask_blur": args.mask_blur, "inpaint_padding": args.inpaint_padding, "hires_scale": args.hires,
           "hires_steps": args.hires_steps, "hires_upscaler": args.hires_upscaler, "subseed": args.subseed,
           "subseed_strength": args.subseed_strength, "prompt_syntax": args.prompt_syntax}
    if args.mask:
        out["mask_image"] = _image_ref(args.mask, ns, "--mask")
    if args.detail:
        out["detail"] = {"detector": args.detail, **({"prompt": args.detail_prompt} if args.detail_prompt else {}),
                         **({"strength": args.detail_strength} if args.detail_strength is not None else {})}
    elif args.detail_prompt or args.detail_strength is not None:
        raise ParamError("--detail-prompt and --detail-strength go with --detail DETECTOR")
    if args.denoise is not None:
        if args.hires:
            out["hires_strength"] = args.denoise
        elif args.init:
            if args.strength is not None:
                raise ParamError("--denoise and --strength both set the img2img strength; give one")
            out["strength"] = args.denoise
        else:
            raise ParamError("--denoise needs the pass it goes with: --hires, or --init (with --mask to inpaint)")
    return {k: v for k, v in out.items() if v is not None}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%%sd", add_help=False, allow_abbrev=False,
                description="Generate images; the cell body is the prompt (a 'Negative prompt:' line sets the "
                            "negative prompt; {name} is replaced from the notebook).")
    add = p.add_argument
    add("--seed", type=_typed(int, "an integer (-1: random)"), help="seed of the first image (image i uses seed+i)")
    add("--steps", type=_typed(_positive, "a positive integer"), help="denoising steps")
    add("--cfg", "--guidance-scale", dest="cfg", type=_typed(_non_negative, "a number >= 0"),
        help="classifier-free guidance scale")
    add("--size", type=_size, metavar="WxH", help="image size in pixels, multiples of 8 (default: the model's)")
    add("--sampler", type=_sampler, help='A1111 sampler name, quoted: "Euler a", "DPM++ 2M Karras", ...')
    add("-n", "--num-images", dest="num_images", type=_typed(_positive, "a positive integer"), help="images per run")
    add("--batch-size", dest="batch_size", type=_typed(_positive, "a positive integer"),
        help="images per pipeline call (default: all of the run's images in one call)")
    add("--model", help="builtin alias, diffusers folder, .safetensors file or hub id")
    add("--negative", help="negative prompt (overrides a 'Negative prompt:' line)")
    add("--lora", action="append", default=[], metavar="NAME[:STRENGTH]", help="use a LoRA (repeatable)")
    add("--control", action="append", default=[], metavar="KIND:IMAGE[:SCALE]",
        help="ControlNet condition; IMAGE is a path or a variable name (repeatable)")
    add("--init", metavar="IMAGE", help="init image (image-to-image): a path, a variable (image or Run), "
        "`last` or a run id")
    add("--strength", type=_typed(float, "a number in [0, 1]"), help="img2img denoising strength")
    add_mode_arguments(add)
    add("-o", "--out", type=_typed(_identifier, "a Python identifier"),
        help="store the Run (a sweep: its list of runs) under this name")
    add("--no-preview", dest="preview", action="store_false", help="no live preview while it runs")
    add("--every", type=_typed(_positive, "a positive integer"), help="record a preview every k steps")
    add("--preview-method", dest="preview_method", choices=["tiny", "approx", "full", "none"],
        help="how step previews are made (default: the best the model has; see sdwidgets.previewers)")
    add("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
        help="run once per value; one sweep makes a row, two a grid (seed=1..8, cfg=3,5,7, "
             'sampler="Euler a","DDIM", lora:NAME=0,0.5,1, or a {variable} of the prompt)')
    add("--eval", metavar="SET", help="evaluate on a prompt set (a notebook variable or a .txt/.csv/.jsonl file); "
        "the sweeps make the grid, the cell body names the scores (adherence, sharpness, colourfulness, clip)")
    add("-h", "--help", action="store_true", help="show this help")
    return p


PARSER = build_parser()
OPTIONS = sorted({s for a in PARSER._actions for s in a.option_strings if s.startswith("--")})


def parse_line(line: str, namespace: dict) -> argparse.Namespace:
    """shlex-split, expand `{name}` in each word, parse; ParamError on anything unknown or malformed."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ParamError(f"cannot split the option line ({exc}); check the quotes") from None
    words = [expand(w, namespace, where="options")[0] for w in words]
    args, extra = PARSER.parse_known_args(words)
    if extra:
        unknown = next((w for w in extra if w.startswith("-")), extra[0])
        if unknown.startswith("-"):
            option = unknown.split("=", 1)[0]
            raise ParamError(f"unknown option {option!r}; {did_you_mean(option, OPTIONS)}")
        raise ParamError(f"unexpected word {unknown!r} (the prompt goes in the cell body); options: {', '.join(OPTIONS)}")
    return args


def _image_ref(text: str, namespace: dict, option: str, log=None):
    """The image `text` names: a notebook variable (a PIL image, an array, or a Run such as one
    kept with --out: its first image), an image file, or a logged run (`last`, a run id or a
    unique part of one: its first image)."""
    from pathlib import Path

    if text.isidentifier() and text in namespace:
        value = namespace[text]
        if hasattr(value, "images") and hasattr(value, "run_id"):      # a Run
            if not value.images:
                raise ParamError(f"{option}: the run in {text!r} has no image")
            return value.images[0]
        return value
    if Path(text).expanduser().exists():
        return text
    if log is not None and len(log):
        try:
            run_id = log.resolve(text)
        except ParamError:
            pass
        else:
            images = log.images(run_id)
            if not images:
                raise ParamError(f"{option}: run {run_id} has no image in the log")
            return images[0]
    if text.isidentifier():
        raise ParamError(f"{option}: {text!r} is neither a variable in the notebook, an image file, "
                         "nor a run in the log (`last`, a run id)")
    return text    # a path: load_image says if there is no such file


def parse_lora(text: str) -> tuple[str, float]:
    name, sep, strength = text.rpartition(":")
    if not sep:
        return text, 1.0
    try:
        return name, float(strength)
    except ValueError:
        raise ParamError(f"--lora: expected NAME[:STRENGTH] with a number, got {text!r}") from None


def parse_control(text: str, namespace: dict, log=None):
    from .controlnet import PREPROCESSORS, Control

    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ParamError(f"--control: expected KIND:IMAGE[:SCALE] with KIND one of {', '.join(PREPROCESSORS)}, "
                         f"got {text!r}")
    if kind not in PREPROCESSORS:
        raise ParamError(f"--control: unknown kind {kind!r}; choose one of: {', '.join(PREPROCESSORS)}")
    image, sep, scale_text = rest.rpartition(":")
    scale = 1.0
    if not sep:
        image = rest
    else:
        try:
            scale = float(scale_text)
        except ValueError:     # no scale; the ':' belongs to the path
            image = rest
    return Control(kind, _image_ref(image, namespace, "--control", log), scale=scale)


# ---- a pasted A1111 parameters line ---------------------------------------------------------------

# field of the 'Steps: 20, Sampler: ...' line -> the GenerationParams attributes it sets
_PASTED = ("steps", "guidance_scale", "seed", "scheduler", "width", "height")


def pasted_settings(fields: dict) -> dict:
    """generate() kwargs from the fields (params.parse_infotext) of a pasted A1111 parameters line.

    params.infotext_settings is the one place that knows A1111's rules; a field it cannot
    read is left out, not an error.
    """
    from .params import infotext_settings

    settings = infotext_settings(fields)
    return {k: settings[k] for k in _PASTED if k in settings}
