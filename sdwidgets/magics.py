"""`%%sd` (the cell is the prompt) and `%sd` (subcommands): a thin skin over the Session.

    %load_ext sdwidgets
    %%sd --seed 1 --steps 20 --sweep cfg=3,5,7
    a {color} circle on a blue background
    Negative prompt: blurry

The magic parses, expands `{name}` from the notebook namespace, validates everything
(no model work, nothing logged on bad input), calls `Session.generate`, and displays
the Run. Settings are traitlets on `SDMagic`, so `%config SDMagic.steps = 8` works.
No torch or diffusers at import: they load with the first generation.
"""
from __future__ import annotations

import html
import secrets
import shlex
import time
from contextlib import contextmanager

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display
from traitlets import Bool, Float, Int, TraitError, Unicode, validate

from .errors import ParamError, SDWidgetsError
from .magic_parse import (PARSER, Plan, _image_ref, _jsonable, expand, mode_options, parse_control, parse_line,
                          parse_lora, pasted_settings, template_fields)
from .modes import wildcards
from .sweep import MAX_AXES, SweepResult, cells, parse_axes, parse_size, wildcard_axis
from .validate import close_matches

# ---- the magic ----------------------------------------------------------------------------------


@magics_class
class SDMagic(Magics):
    """`%%sd` generates (the cell is the prompt); `%sd help` lists the subcommands."""

    steps = Int(None, allow_none=True, help="default --steps (None: the library default)").tag(config=True)
    cfg = Float(None, allow_none=True, help="default --cfg (None: the library default)").tag(config=True)
    sampler = Unicode(None, allow_none=True, help="default --sampler (None: the model's own)").tag(config=True)
    size = Unicode(None, allow_none=True, help="default --size WxH (None: the model's native size)").tag(config=True)
    negative = Unicode("", help="default negative prompt").tag(config=True)
    model = Unicode(None, allow_none=True,
                    help="model for %%sd when no --model (None: the session's default)").tag(config=True)
    preview = Bool(True, help="show a live preview while generating").tag(config=True)
    preview_every = Int(1, min=1, help="record a preview every k steps (--every)").tag(config=True)
    preview_method = Unicode(None, allow_none=True, help="tiny, approx, full or none (--preview-method; "
                             "None: the session's, else the best the model has)").tag(config=True)
    preview_interval = Float(0.2, min=0.0, help="minimum seconds between live preview updates").tag(config=True)
    preview_size = Int(256, min=16,
                       help="tiny previews are upscaled (nearest) to at least this many pixels").tag(config=True)
    grid_cell_size = Int(160, min=16, help="minimum pixels of one cell of a sweep grid").tag(config=True)
    progress = Bool(True, help="show a tqdm progress bar (replaces the pipeline's own bar)").tag(config=True)
    max_runs = Int(64, min=1, help="most images a cell may make (a sweep's runs x images per run)").tag(config=True)

    @validate("sampler")
    def _check_sampler(self, proposal):
        from .schedulers import check_sampler

        try:
            return None if proposal.value is None else check_sampler(proposal.value)
        except ParamError as exc:
            raise TraitError(str(exc).removeprefix("scheduler: ")) from None

    @validate("size")
    def _check_size(self, proposal):
        try:
            return None if proposal.value is None else "x".join(map(str, parse_size(proposal.value)))
        except ParamError as exc:
            raise TraitError(str(exc)) from None

    @property
    def session(self):
        from .session import session

        return session()

    # ---- %%sd ----------------------------------------------------------------------------
    @no_var_expand
    @cell_magic("sd")
    def sd(self, line: str, cell: str):
        """Generate images from the cell's prompt. `%sd help sd` lists the options."""
        try:
            plan = self.plan(line, cell)
            if plan is None:
                print(PARSER.format_help())
                return None
            result = self.execute(plan)
        except SDWidgetsError as exc:
            raise UsageError(f"%%sd: {exc}") from None
        if plan.out:
            self.shell.user_ns[plan.out] = result
        return None

    def plan(self, line: str, cell: str) -> Plan | None:
        """Parse and validate a cell without any model work. None for --help."""
        from .params import GenerationParams, parse_infotext

        ns = self.shell.user_ns
        args = parse_line(line, ns)
        if args.help:
            return None
        if args.eval is not None:       # an evaluation design (sdwidgets.evaluation)
            from .evaluation.magic import eval_plan

            return eval_plan(self, args, cell)
        if not cell.strip():
            raise ParamError("the cell is empty: write the prompt in the cell body, under %%sd")
        # {a|b} variants (issue 25, modes/wildcards): every combination is one run, an axis named prompt
        variants = wildcards.expand(cell, self.max_runs) if wildcards.has_variants(cell) else None
        fields = template_fields(variants[0] if variants else cell)
        axes = parse_axes(args.sweep, set().union(*fields.values()) if fields else set(), self.max_runs)
        if variants:
            axes = [wildcard_axis(variants), *axes]
            if len(axes) > MAX_AXES:
                raise ParamError(f"--sweep: {{a|b}} variants are a sweep of the prompt; at most {MAX_AXES - 1} "
                                 "--sweep with them")
        n_images = args.num_images or 1
        for axis in axes:
            n_images *= len(axis.values)
        if n_images > self.max_runs:     # images, not runs: -n 8 with 16 seeds is 128 images
            raise ParamError(f"{n_images} images in this cell is more than SDMagic.max_runs={self.max_runs} "
                             "(raise it with %config SDMagic.max_runs = N)")
        explicit = self._explicit(args, ns, self.session.log)
        defaults = self._defaults()
        plan = Plan([], [], [], axes, out=args.out, preview=args.preview and self.preview,
                    every=args.every or self.preview_every,
                    preview_method=args.preview_method or self.preview_method)
        combos = []
        for _, _, chosen in cells(axes):
            swept, variables = {}, {}
            for axis in axes:
                axis.apply(swept, variables, chosen[axis.name])
            if "loras" in swept:
                swept["loras"] = {**explicit.get("loras", {}), **swept["loras"]}
            text, values = expand(chosen["prompt"] if variants else cell, {**ns, **variables})
            settings, prompt, negative = parse_infotext(text)
            pasted = pasted_settings(settings)
            if pasted and not plan.notes:
                used = sorted(k for k in settings if k in ("Steps", "CFG scale", "Seed", "Size", "Sampler"))
                plan.notes.append(f"using {', '.join(used)} from the pasted parameters line")
            kwargs = {**defaults, **({"negative_prompt": negative} if negative else {}), **pasted, **explicit, **swept}
            if kwargs.get("seed") == -1:      # A1111's "random"
                del kwargs["seed"]
            tags = {"source": "magic", "template": cell}
            if values:
                tags["values"] = values
            if axes:
                tags["sweep"] = {a.name: _jsonable(chosen[a.name]) for a in axes}
            combos.append((prompt, kwargs, tags, " · ".join(a.label(chosen[a.name]) for a in axes)))
        if len(combos) > 1 and all(kw.get("seed") is None for _, kw, _, _ in combos):
            shared = secrets.randbelow(2**32)     # a sweep compares settings, not seeds: one seed for all
            for _, kw, _, _ in combos:
                kw["seed"] = shared
        for prompt, kwargs, tags, label in combos:
            plan.params.append(GenerationParams(prompt=prompt, **kwargs))
            plan.tags.append(tags)
            plan.labels.append(label)
        self._check_resources(plan.params)
        return plan

    def _defaults(self) -> dict:
        out = {"steps": self.steps, "guidance_scale": self.cfg, "scheduler": self.sampler, "model": self.model,
               "negative_prompt": self.negative or None}
        if self.size:
            out["width"], out["height"] = parse_size(self.size)
        return {k: v for k, v in out.items() if v is not None}

    @staticmethod
    def _explicit(args, ns, log=None) -> dict:
        out = {"seed": args.seed, "steps": args.steps, "guidance_scale": args.cfg, "scheduler": args.sampler,
               "num_images": args.num_images, "batch_size": args.batch_size, "model": args.model, "negative_prompt": args.negative,
               "strength": args.strength}
        if args.size:
            out["width"], out["height"] = args.size
        if args.lora:
            out["loras"] = dict(parse_lora(t) for t in args.lora)
        if args.control:
            out["controls"] = [parse_control(t, ns, log) for t in args.control]
        if args.init:
            out["init_image"] = _image_ref(args.init, ns, "--init", log)
        out.update(mode_options(args, ns))
        return {k: v for k, v in out.items() if v is not None}

    def _check_resources(self, params: list) -> None:
        """Model names and LoRA names of every run, before the first one starts."""
        session = self.session
        for model in dict.fromkeys(p.model for p in params):
            session.resolve(model)
            wanted = {name for p in params if p.model == model for name, _ in p.loras}
            if wanted:
                known = session.loras(model)
                unknown = sorted(wanted - set(known))
                if unknown:
                    near = close_matches(unknown[0], known)
                    hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known) or 'none'}"
                    raise ParamError(f"--lora: unknown LoRA {unknown[0]!r}; {hint} (add one with %sd lora load PATH [NAME])")

    def execute(self, plan: Plan):
        """Run the plan with a live preview and progress; display and return the Run (or SweepResult)."""
        if not isinstance(plan, Plan):
            return plan.execute(self)
        for note in plan.notes:
            print(note)
        session = self.session
        loading = not session.is_loaded(plan.params[0].model)
        view = LiveView(self, sum(p.steps * p.num_images for p in plan.params), len(plan.params), plan.preview,
                        loading=loading)
        runs = []
        with _own_progress_bar(session, self.progress):
            try:
                for params, tags, label in zip(plan.params, plan.tags, plan.labels):
                    view.start_run(label, params.num_images, params.steps)
                    run = session.generate(params=params, tags=tags, on_step=view.on_step,
                                           preview_every=plan.every, preview_method=plan.preview_method)
                    runs.append(run)
                    view.finish_run()
                    if run.status != "ok":
                        break
            except KeyboardInterrupt:     # between two runs of a sweep; each finished run is logged
                pass
            except BaseException as exc:
                view.fail(f"{type(exc).__name__}: {exc}")
                raise
            finally:
                view.close()
        if not runs:
            raise UsageError("%%sd: interrupted before the first run started")
        result = SweepResult(runs, plan.axes, self.grid_cell_size) if plan.axes else runs[0]
        view.show(result)
        return result

    # ---- %sd -----------------------------------------------------------------------------
    @no_var_expand
    @line_magic("sd")
    def sd_line(self, line: str):
        """`%sd COMMAND ...`: model, config, log, show, rerun, compare, loras, lora load, controls, unload,
        dashboard, interrupt, import, help."""
        from .magic_commands import dispatch

        try:
            words = [expand(w, self.shell.user_ns, where="%sd")[0] for w in shlex.split(line)]
        except ValueError as exc:
            raise UsageError(f"%sd: {exc}") from None
        try:
            return dispatch(self, words)
        except SDWidgetsError as exc:
            raise UsageError(f"%sd: {exc}") from None


# ---- live display ---------------------------------------------------------------------------


class _Frame:
    """One live preview: the upscaled latent preview and a status line."""

    def __init__(self, image, text: str, size: int):
        self.image, self.text, self.size = image, text, size

    def _repr_html_(self) -> str:
        from .images import data_url

        img = f'<img src="{data_url(self.image, self.size)}" style="image-rendering:pixelated"/>' if self.image else ""
        return (f'<div class="sdw-live">{img}<div style="font-family:monospace;font-size:12px">'
                f'{html.escape(self.text)}</div></div>')

    def __repr__(self) -> str:
        return self.text


class LiveView:
    """One display handle updated in place (throttled) plus one tqdm.auto bar for the whole cell.

    The bar counts denoising steps of every image of every run (images of a run are denoised
    one after another); its total follows the scheduler's real step count once a run starts.
    """

    def __init__(self, magic: SDMagic, total_steps: int, total_runs: int, preview: bool, loading: bool = False):
        from IPython.core.displaypub import DisplayPublisher

        self.interval, self.size, self.total_runs = magic.preview_interval, magic.preview_size, total_runs
        # the plain terminal publisher can only print: previews there would be noise
        live = preview and type(magic.shell.display_pub) is not DisplayPublisher
        first = "loading model (first run)…" if loading else "starting…"
        self.handle = display(_Frame(None, first, self.size), display_id=True) if live else None
        self.started = False      # the bar's clock starts at the first step: its ETA leaves out loading
        self.bar = None
        if magic.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, unit="step", desc="%%sd", leave=False)
        self.done, self.run_index, self.label = 0, 0, ""
        self.last_update, self.updates = float("-inf"), 0

    def start_run(self, label: str, num_images: int, steps: int) -> None:
        self.run_index += 1
        self.label, self.num_images, self.run_total = label, num_images, num_images * steps
        self.image, self.count = -1, 0
        if self.bar is not None and label:
            self.bar.set_postfix_str(label, refresh=False)

    def finish_run(self) -> None:
        self.done += self.run_total
        self._advance(self.done)

    def _advance(self, position: int) -> None:
        if self.bar is not None:
            self.bar.update(max(0, position - self.bar.n))

    def on_step(self, recorder) -> None:
        """Called by the Session after each recorded step (on the generating thread)."""
        if not self.started and self.bar is not None:
            self.started = True
            self.bar.reset(total=self.bar.total)
        if recorder.image_index != self.image:
            self.image, self.count = recorder.image_index, 0
        self.count += 1
        steps, total = recorder.steps, recorder.total_steps   # step numbers are the same for every image
        step = min(steps[min(self.count, len(steps)) - 1] if steps else 0, total)
        if self.bar is not None and total * self.num_images != self.run_total:
            self.bar.total += total * self.num_images - self.run_total
            self.run_total = total * self.num_images
        count = getattr(recorder, "batch_count", 1)      # images denoised together in this call
        self._advance(self.done + self.image * total + step * count)
        now = time.monotonic()
        if self.handle is None or now - self.last_update < self.interval or recorder.latest is None:
            return
        where = [f"run {self.run_index}/{self.total_runs}", self.label] if self.total_runs > 1 else []
        if self.num_images > 1:
            which = f"{self.image + 1}" if count == 1 else f"{self.image + 1}-{self.image + count}"
            where.append(f"image {which}/{self.num_images}")
        text = " · ".join([*where, f"step {step}/{total}"])
        self.handle.update(_Frame(recorder.latest, text, self.size))
        self.last_update, self.updates = time.monotonic(), self.updates + 1

    def fail(self, message: str) -> None:
        """Replace a stale preview with the reason the cell stopped."""
        if self.handle is not None:
            self.handle.update(_Frame(None, f"stopped: {message}", self.size))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def show(self, result) -> None:
        """The final images replace the live preview (same output area)."""
        if self.handle is not None:
            self.handle.update(result)
        else:
            display(result)


@contextmanager
def _own_progress_bar(session, ours: bool):
    """While our bar runs, silence the pipeline's own per-run bar (restored after)."""
    if not (ours and session.options.progress):
        yield
        return
    session.set_options(progress=False)
    try:
        yield
    finally:
        session.set_options(progress=True)


# ---- extension entry points -------------------------------------------------------------------


def load_ipython_extension(ipython) -> None:
    """`%load_ext sdwidgets`: register %%sd / %sd (once per shell)."""
    if "SDMagic" not in ipython.magics_manager.registry:
        ipython.register_magics(SDMagic(shell=ipython))


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext sdwidgets`: remove %%sd / %sd and the SDMagic configurable."""
    magic = ipython.magics_manager.registry.pop("SDMagic", None)
    if magic is None:
        return
    ipython.magics_manager.magics["line"].pop("sd", None)
    ipython.magics_manager.magics["cell"].pop("sd", None)
    if magic in ipython.configurables:
        ipython.configurables.remove(magic)
