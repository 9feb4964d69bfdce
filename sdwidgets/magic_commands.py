"""The `%sd` subcommands: one small function each, behind the COMMANDS dispatch dict.

Each takes (magic, args) and returns what the notebook should show as Out (or None after
printing). User mistakes raise ParamError; the magic turns them into one-line UsageErrors.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Callable

from .errors import ParamError
from .validate import parse_int


@dataclass(frozen=True)
class Command:
    fn: Callable
    usage: str
    summary: str


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str):
    def register(fn):
        COMMANDS[name] = Command(fn, usage, (fn.__doc__ or "").strip().splitlines()[0])
        return fn
    return register


def dispatch(magic, words: list[str]):
    if not words:
        return cmd_help(magic, [])
    name, args = words[0], words[1:]
    if name not in COMMANDS:
        raise ParamError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)} "
                         "(generate with the %%sd cell magic)")
    return COMMANDS[name].fn(magic, args)


def _arity(name: str, args: list, lo: int, hi: int | None) -> None:
    if len(args) < lo or (hi is not None and len(args) > hi):
        raise ParamError(f"usage: %sd {COMMANDS[name].usage}")


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _assignments(name: str, args: list[str]) -> dict:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ParamError(f"expected NAME=VALUE, got {arg!r}; usage: %sd {COMMANDS[name].usage}")
        out[key.strip()] = value
    return out


def _stored_values(record: dict) -> dict:
    """The template values a record was made with ({} when absent or damaged)."""
    try:
        values = json.loads(record["template_values"]) if record.get("template_values") else {}
    except ValueError:
        raise ParamError(f"rerun: the record's template_values is not JSON: {record['template_values'][:40]!r}") from None
    if not isinstance(values, dict):
        raise ParamError("rerun: the record's template_values is not a JSON object")
    return values


# ---- commands ---------------------------------------------------------------------------------


@command("help", "help [COMMAND]")
def cmd_help(magic, args):
    """This help; `%sd help COMMAND` for one command, `%sd help sd` for the %%sd options."""
    from .magic_parse import PARSER

    if args:
        name = args[0].lstrip("%")
        if name == "sd":
            print(PARSER.format_help())
            return None
        if name not in COMMANDS:
            raise ParamError(f"no command {name!r}; commands: {', '.join(COMMANDS)}")
        cmd = COMMANDS[name]
        print(f"%sd {cmd.usage}\n\n{(cmd.fn.__doc__ or '').strip()}")
        return None
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = ["%%sd [options]  (cell magic: the cell is the prompt; `%sd help sd` lists the options)", ""]
    lines += [f"%sd {c.usage.ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", "Settings: %sd config, or %config SDMagic.<name> = value"]
    print("\n".join(lines))
    return None


@command("model", "model [ID_OR_PATH]")
def cmd_model(magic, args):
    """Show the default model, or set it (a builtin alias, diffusers folder, .safetensors file or hub id).

    Setting it only checks the name; the model loads with the next generation.
    """
    _arity("model", args, 0, 1)
    session = magic.session
    if args:
        ref = session.resolve(args[0])          # ModelNotFoundError -> usage error
        session.default_model = args[0]
        if magic.model is not None:
            magic.model = None                   # the magic follows the session's default again
    try:
        ref = session.resolve(magic.model)
        line = f"default model: {ref.name} ({ref.kind}: {ref.location})"
    except ParamError as exc:
        line = f"default model: {session.default_model or 'the builtin default'} — {exc}"
    if magic.model is not None:
        line += "  [set by SDMagic.model]"
    print(line + f"\nloaded: {', '.join(session.loaded_models) or 'none'}")
    return None


@command("config", "config [NAME=VALUE ...]")
def cmd_config(magic, args):
    """Show the magic's settings and the session's options, or set them (NAME=VALUE).

    Magic settings also work with `%config SDMagic.NAME = VALUE`; session options
    (attention_slicing, vae_slicing, vae_tiling, cpu_offload, ...) apply without reloading.
    """
    from traitlets import TraitError

    session = magic.session
    traits = magic.class_traits(config=True)
    options = session.options.as_dict()
    changes = _assignments("config", args)
    for key, text in changes.items():
        value = _literal(text)
        if key in traits:
            try:
                setattr(magic, key, value)
            except TraitError as exc:
                raise ParamError(f"config: SDMagic.{key}: {exc}") from None
        elif key in options:
            session.set_options(**{key: value})
        else:
            raise ParamError(f"config: unknown setting {key!r}; magic: {', '.join(sorted(traits))}; "
                             f"session: {', '.join(options)}")
    if changes:
        return None
    lines = ["SDMagic (%config SDMagic.NAME = VALUE):"]
    lines += [f"  {name:<17}= {getattr(magic, name)!r:<10}  {trait.help}" for name, trait in sorted(traits.items())]
    lines += [f"session: {session!r}", "session options: "
              + ", ".join(f"{k}={v!r}" for k, v in session.options.as_dict().items())]
    print("\n".join(lines))
    return None


@command("log", "log [N] [--all]")
def cmd_log(magic, args):
    """The last N rows of the experiment log (default 10; one per image): compact, or every column with --all."""
    show_all = "--all" in args
    args = [a for a in args if a != "--all"]
    _arity("log", args, 0, 1)
    n = parse_int(args[0], "log: N", 1) if args else 10
    rows = magic.session.log.last(n)
    if show_all:
        return rows
    from .logtable import LogTable

    return LogTable(rows, magic.session.log.dir)


def run_from_log(log, run_id: str):
    """A Run rebuilt from the log (images from disk), for display."""
    from .run import Run

    rows = log.records(run_id)
    first = rows[0]
    return Run(run_id=run_id, params=log.params(run_id), images=log.images(run_id), status=first["status"],
               duration_s=first["duration_s"] or 0.0, sampler=first["scheduler"] or "", model_name=first["model"] or "",
               pipeline_class=first["pipeline"] or "", error=first["error"], tags={"source": first["source"]})


@command("show", "show RUN_ID")
def cmd_show(magic, args):
    """Show a logged run's images and caption (RUN_ID may be `last` or a unique prefix/suffix)."""
    _arity("show", args, 1, 1)
    log = magic.session.log
    return run_from_log(log, log.resolve(args[0]))


@command("rerun", "rerun RUN_ID [NAME=VALUE ...]")
def cmd_rerun(magic, args):
    """Generate a logged run again: same parameters, same seed, same image.

    NAME=VALUE changes one thing: a {variable} of the run's prompt template (the prompt is
    expanded again), or seed, steps, cfg, sampler, size, strength, negative.
    """
    from .magic_parse import Plan, fill_template
    from .params import parse_infotext
    from .sweep import ALIASES, PARAMS

    _arity("rerun", args, 1, None)
    log = magic.session.log
    run_id = log.resolve(args[0])
    record = log.records(run_id)[0]
    params = log.params(run_id)
    template = record.get("prompt_template")
    values = _stored_values(record)
    tags = {"source": "rerun", "rerun_of": run_id}
    changes, new_values = {}, {}
    for key, text in _assignments("rerun", args[1:]).items():
        name = ALIASES.get(key, key)
        if template and key in values:
            new_values[key] = _literal(text)
        elif name in PARAMS:
            parse, target = PARAMS[name]
            value = parse(text)
            changes.update(zip(target, value) if isinstance(target, tuple) else [(target, value)])
        else:
            variables = f"; template variables: {', '.join(values)}" if values else ""
            raise ParamError(f"rerun: cannot change {key!r}; parameters: {', '.join(PARAMS)}{variables}")
    if template:
        tags["template"] = template
        if values:
            tags["values"] = values
        if new_values:   # the stored template is data: only its plain {name} fields are filled, never evaluated
            text, tags["values"] = fill_template(template, {**values, **new_values})
            _, prompt, negative = parse_infotext(text)
            changes.update(prompt=prompt, negative_prompt=negative or params.negative_prompt)
    params = params.replace(**changes)
    magic.execute(Plan([params], [tags], [""], [], preview=magic.preview, every=magic.preview_every))
    return None


@command("compare", "compare RUN_ID RUN_ID [...]")
def cmd_compare(magic, args):
    """Runs side by side with the parameters that differ highlighted."""
    _arity("compare", args, 2, None)
    log = magic.session.log
    return log.compare([log.resolve(a) for a in args])


@command("loras", "loras")
def cmd_loras(magic, args):
    """The LoRAs usable with the default model (bundled and loaded), as a DataFrame."""
    import pandas as pd

    _arity("loras", args, 0, 0)
    known = magic.session.loras(magic.model)
    if not known:
        print("no LoRAs yet: add one with %sd lora load PATH [NAME]")
        return None
    return pd.DataFrame([{"name": i.name, "path": str(i.path), "trigger_words": ", ".join(map(str, i.trigger_words))}
                         for i in known.values()]).set_index("name")


@command("lora", "lora load PATH [NAME]")
def cmd_lora(magic, args):
    """Register a LoRA file under NAME (default: the file name); use it with --lora NAME:STRENGTH."""
    if not args or args[0] != "load":
        raise ParamError(f"usage: %sd {COMMANDS['lora'].usage}")
    _arity("lora", args, 2, 3)
    info = magic.session.load_lora(args[1], args[2] if len(args) > 2 else None)
    words = f" (trigger words: {', '.join(map(str, info.trigger_words))})" if info.trigger_words else ""
    print(f"LoRA {info.name!r} from {info.path}{words}; use it with --lora {info.name}:0.8")
    return None


@command("controls", "controls")
def cmd_controls(magic, args):
    """ControlNet kinds for --control KIND:IMAGE[:SCALE], and where each one's ControlNet comes from."""
    import pandas as pd

    from .controlnet import HUB_CONTROLNETS, PREPROCESSORS

    _arity("controls", args, 0, 0)
    session = magic.session
    try:
        ref = session.resolve(magic.model)
    except ParamError:
        ref = None
    rows = []
    for kind, (detector, needs_weights, options) in PREPROCESSORS.items():
        # Session.controlnet_source is the one place that knows (registered, bundled, hub)
        source = session.controlnet_source(kind, magic.model) if ref is not None else None
        if source is None and ref is not None and ref.kind != "builtin" and any(k == kind for _, k in HUB_CONTROLNETS):
            source = "the hub's for the model's family (downloads on first use)"
        rows.append({"kind": kind, "controlnet": source or "none",
                     "preprocessor": detector + (" (downloads annotator weights)" if needs_weights else ""),
                     "options": ", ".join(f"{k}={v}" for k, v in options.items())})
    return pd.DataFrame(rows).set_index("kind")


@command("unload", "unload [MODEL]")
def cmd_unload(magic, args):
    """Free a loaded model (default: the default model) and its pipelines."""
    _arity("unload", args, 0, 1)
    session = magic.session
    model = args[0] if args else magic.model
    name = session.resolve(model).name
    was_loaded = name in session.loaded_models
    session.unload(model)
    print(f"unloaded {name}" if was_loaded else f"{name} was not loaded")
    return None


@command("dashboard", "dashboard")
def cmd_dashboard(magic, args):
    """Open the widget dashboard on this session."""
    from IPython.display import display

    _arity("dashboard", args, 0, 0)
    try:
        from .widgets.dashboard import Dashboard
    except ImportError as exc:
        if not (exc.name or "").startswith("sdwidgets.widgets"):
            raise
        raise ParamError("the widget dashboard is not available in this version yet; use %%sd meanwhile") from None
    display(Dashboard(session=magic.session))
    return None


@command("interrupt", "interrupt")
def cmd_interrupt(magic, args):
    """Stop the running generation after its current step (it is logged as interrupted)."""
    _arity("interrupt", args, 0, 0)
    session = magic.session
    if not session.running:
        print("nothing is running")
        return None
    session.interrupt()
    print("interrupt requested: the run stops after the current step")
    return None


@command("import", "import IMAGE_PATH")
def cmd_import(magic, args):
    """Read the parameters of an image (ours, A1111/Forge, ComfyUI, InvokeAI, NovelAI, Fooocus) into the next %%sd.

    The next cell is filled with a %%sd cell that makes the same request; run it as is or edit it first.
    What cannot be carried over is named in a warning.
    """
    from .params import GenerationParams

    _arity("import", args, 1, 1)
    params = GenerationParams.from_png(args[0])
    cell = import_cell(params, magic.session)
    magic.shell.set_next_input(cell, replace=False)
    print(f"imported {args[0]}: the next cell is a %%sd with its parameters")
    return None


def import_cell(params, session) -> str:
    """A %%sd cell (option line + prompt) that asks for what `params` describes."""
    import shlex

    options = []
    if params.seed is not None:
        options += ["--seed", str(params.seed)]
    options += ["--steps", str(params.steps), "--cfg", f"{params.guidance_scale:g}"]
    if params.scheduler:
        options += ["--sampler", params.scheduler]
    if params.width and params.height:
        options += ["--size", f"{params.width}x{params.height}"]
    if params.num_images > 1:
        options += ["-n", str(params.num_images)]
    if params.model:
        try:
            session.resolve(params.model)
            options += ["--model", params.model]
        except ParamError:
            print(f"model {params.model!r} is not available here; the cell uses the default model")
    known = session.loras(options[options.index("--model") + 1] if "--model" in options else None) \
        if params.loras else {}
    for name, strength in params.loras:
        if name in known:
            options += ["--lora", f"{name}:{strength:g}"]
        else:
            print(f"LoRA {name!r} is not loaded here; left out (add it with %sd lora load PATH {name})")
    escape = lambda text: text.replace("{", "{{").replace("}", "}}")  # noqa: E731 - literal braces, not templates
    body = escape(params.prompt)
    if params.negative_prompt:
        body += "\nNegative prompt: " + escape(params.negative_prompt)
    return "%%sd " + " ".join(shlex.quote(o) for o in options) + "\n" + body
