"""`%%sd --eval SET --sweep steps=2,20 --sweep seed=0..3`: an evaluation from a cell.

    %%sd --eval shapes24 --sweep sampler="Euler","DDIM" --sweep steps=4,20 --cfg 5
    adherence, sharpness

SET is a notebook variable (a PromptSet or a list of prompts) or a .txt/.csv/.jsonl file; the
sweeps make the grid (a seed sweep gives the seeds), the other options are fixed for every
image, and the cell body names the scores (IPython refuses a cell magic with an empty body).
Parsing only here; the Session runs the design.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParamError
from .promptset import PromptSet, as_prompt_set


@dataclass
class EvalPlan:
    prompt_set: PromptSet
    grid: dict
    seeds: list
    fixed: dict
    scorers: list | None
    out: str | None = None            # %%sd --out NAME keeps the Evaluation

    def execute(self, magic):
        from IPython.display import display

        ev = magic.session.evaluate(self.prompt_set, self.grid, self.seeds, self.scorers, progress=magic.progress,
                                    **self.fixed)
        display(ev)
        return ev


def eval_plan(magic, args, cell: str) -> EvalPlan:
    """Validate an --eval cell without any model work."""
    from ..sweep import PARAMS, parse_axes

    from .scorers import resolve_scorers

    names = [w.strip() for line in cell.splitlines() for w in line.split("#", 1)[0].split(",") if w.strip()]
    if not names:
        raise ParamError("--eval: name the scores in the cell body, e.g. `adherence, sharpness` "
                         "(built-in: adherence, sharpness, colourfulness, clip)")
    for name in names:
        try:
            resolve_scorers([name])
        except ParamError as exc:
            raise ParamError(f"--eval: {exc} (the cell body names the scores; the prompts come from the set)") \
                from None
    if args.num_images:
        raise ParamError("--eval: one image per prompt and seed; sweep seeds instead of -n (--sweep seed=0..3)")
    if args.control or args.init:
        raise ParamError("--eval: --control and --init are not supported in an evaluation yet")
    ns = magic.shell.user_ns
    prompt_set = as_prompt_set(args.eval, ns)
    grid, seeds = {}, None
    for axis in parse_axes(args.sweep, set()):
        if axis.name == "seed":
            seeds = list(axis.values)
        elif axis.kind != "param" or isinstance(PARAMS[axis.name][1], tuple):
            raise ParamError(f"--eval: cannot sweep {axis.name!r} in an evaluation; sweep steps, cfg, sampler, "
                             "negative, model or seed")
        else:
            grid[PARAMS[axis.name][1]] = list(axis.values)
    explicit = magic._explicit(args, ns, magic.session.log)
    if seeds is None:
        seeds = [explicit["seed"]] if explicit.get("seed", -1) >= 0 else [0]
    fixed = {k: v for k, v in {**magic._defaults(), **explicit}.items() if k not in grid and k != "seed"}
    return EvalPlan(prompt_set, grid, seeds, fixed, names, args.out)
