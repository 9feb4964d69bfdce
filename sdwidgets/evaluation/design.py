"""Run an evaluation design through the Session and hold its tidy result.

A design is configurations (the product of `grid`) x prompts x seeds, one image each.
Every image is a logged run (tagged with the prompt set's name and hash), so an
evaluation interrupted half-way resumes: cells whose parameters match a finished row of
the log are reused, not regenerated. Scores live in the log's scores.jsonl (log.score),
so they are computed once.
"""
from __future__ import annotations

import itertools
import json

from ..errors import ParamError
from .promptset import PromptSet, as_prompt_set

# grid keys: GenerationParams fields, plus the %%sd --sweep names for them
GRID_FIELDS = ("scheduler", "steps", "guidance_scale", "width", "height", "negative_prompt", "model", "loras",
               "strength")
GRID_ALIASES = {"sampler": "scheduler", "cfg": "guidance_scale", "negative": "negative_prompt"}
_MATCHED = ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height", "scheduler", "model",
            "loras", "controls", "init_image_sha256", "strength")


def canonical(config: dict, where: str = "grid") -> dict:
    out = {}
    for key, value in config.items():
        name = GRID_ALIASES.get(key, key)
        if name not in GRID_FIELDS:
            raise ParamError(f"{where}: unknown parameter {key!r}; accepted: {', '.join(GRID_FIELDS)} "
                             f"(or {', '.join(GRID_ALIASES)})")
        out[name] = value
    return out


def configurations(grid: dict | None) -> list[dict]:
    """The product of the grid's value lists, first key slowest; [{}] for no grid."""
    grid = canonical(grid or {})
    for key, values in grid.items():
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__") or not list(values):
            raise ParamError(f"grid: {key!r} must be a non-empty list of values, got {str(values)[:40]!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]


def _seeds(seeds) -> list[int]:
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ParamError(f"seeds must be a non-empty list of integers >= 0, got {str(seeds)[:40]!r}")
    return seeds


def _key(params: dict) -> str:
    return json.dumps({k: params.get(k) for k in _MATCHED}, sort_keys=True, default=str)


def evaluate(session, prompt_set, grid: dict | None = None, seeds=(0,), scorers=None, *, progress: bool = True,
             recompute: bool = False, **fixed) -> "Evaluation":
    """Run (or resume) the design and score it; see Session.evaluate."""
    from ..limits import limit
    from ..log import COLUMNS
    from ..params import GenerationParams
    from .scorers import BUILTIN, resolve_scorers

    # 1. Validate the whole design before any model work
    ps = as_prompt_set(prompt_set)
    configs = configurations(grid)
    seeds = _seeds(seeds)
    fixed = canonical(fixed, "evaluate") if fixed else {}
    clash = sorted(set(fixed) & set(configs[0]))
    if clash:
        raise ParamError(f"evaluate: {', '.join(clash)} is both fixed and in the grid; give it once")
    total = len(configs) * len(ps) * len(seeds)
    if total > limit("sweep_values"):
        raise ParamError(f"evaluate: {total} images is more than the sweep_values limit of {limit('sweep_values')}")
    cells = []
    for config in configs:
        for i, prompt in enumerate(ps):
            for seed in seeds:
                try:
                    params = GenerationParams(prompt=prompt, seed=seed, **fixed, **config)
                except TypeError as exc:
                    raise ParamError(f"evaluate: {exc}") from None
                cells.append((config, i, seed, params))
    for params in {p.model: p for *_, p in cells}.values():
        session.resolve(params.model)
        session._check_loras(session.resolve(params.model), params)
    if scorers is None:
        names = set(BUILTIN) if all(session.resolve(p.model).name == "shapes" for *_, p in cells) \
            else set(BUILTIN) - {"adherence"}
        scorers = {k: v for k, v in BUILTIN.items() if k in names}
    scorers = resolve_scorers(scorers, reserved=COLUMNS)

    # 2. Reuse finished rows of the log, generate the rest (one bar for the design, none per image)
    done = _finished(session.log)
    rows, status = [], "ok"
    bar = _bar(len(cells), progress)
    quiet = session.options.progress
    if quiet:
        session.set_options(progress=False)
    try:
        for config, i, seed, params in cells:
            want = _resolved(session, params)
            record = done.get(_key(want))
            reused = record is not None
            if record is None:
                run = session.generate(params=params, preview="none",
                                       tags={"source": "evaluate", **ps.tags(i), "evaluation": config})
                if run.status != "ok":
                    status = run.status
                    break
                record = session.log.records(run.run_id)[0]
            rows.append(_row(config, i, seed, record, reused))
            bar.update(1)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        bar.close()
        if quiet:
            session.set_options(progress=True)

    # 3. Score (only what is not scored yet) and assemble
    run_ids = {r["run_id"] for r in rows}
    for name, fn in scorers.items():
        session.log.score(name, fn, run_ids=run_ids, recompute=recompute, progress=progress)
    return Evaluation(rows, session.log, ps, list(configs[0]), list(scorers), status, total)


def _resolved(session, params) -> dict:
    """The parameters the log would record for this cell: model resolved, size filled in."""
    ref = session.resolve(params.model)
    model = ref.name if ref.kind in ("builtin", "hub") else ref.location
    width, height = params.width, params.height
    if width is None or height is None:
        native = session.native_size(params.model)
        width, height = width or native[0], height or native[1]
    return params.replace(model=model, width=width, height=height).to_dict()


def _finished(log) -> dict:
    """key of the parameters -> the latest ok record of a single image with them."""
    log.refresh()
    out = {}
    for record in log._records:
        if record.get("status") != "ok" or not record.get("image_path"):
            continue
        params = dict(record["params"], seed=record["seed"])
        try:
            if not log.image_file(record).is_file():
                continue
        except ParamError:
            continue
        out[_key(params)] = record
    return out


def _row(config, index, seed, record, reused) -> dict:
    return {**config, "prompt_index": index, "prompt": record["prompt"], "seed": seed, "run_id": record["run_id"],
            "image_index": record["image_index"], "image_path": record["image_path"],
            "duration_s": record["duration_s"], "reused": reused}


def _bar(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", leave=False, disable=not show)


class Evaluation:
    """The result of an evaluation: `.df` (one row per image with its scores), `.summary()`,
    `.compare(a, b, score)` and the plots."""

    def __init__(self, rows: list[dict], log, prompt_set: PromptSet, factors: list[str], scores: list[str],
                 status: str = "ok", planned: int | None = None):
        self.rows, self.log, self.prompt_set = rows, log, prompt_set
        self.factors, self.scores, self.status = factors, scores, status
        self.planned = planned if planned is not None else len(rows)

    @property
    def df(self):
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=[*self.factors, "prompt_index", "prompt", "seed", "run_id", "image_index",
                                              "image_path", "duration_s", "reused"])
        for name in self.scores:
            stored = self.log.scores.values.get(name, {})
            df[name] = [stored.get((r, int(i))) for r, i in zip(df["run_id"], df["image_index"])]
            df[name] = df[name].astype(float)
        df["prompt_set"], df["prompt_set_hash"] = self.prompt_set.name, self.prompt_set.hash
        return df

    def _score(self, score: str | None) -> str:
        if score is None:
            if not self.scores:
                raise ParamError("this evaluation has no scores; pass scorers=... to evaluate")
            return self.scores[0]
        if score not in self.scores:
            raise ParamError(f"score {score!r} is not in this evaluation; scores: {', '.join(self.scores) or 'none'}")
        return score

    def summary(self, score: str | None = None, level: float = 0.95):
        """Per configuration: images, mean score with a bootstrap CI (every score, or one), seconds per image."""
        import pandas as pd

        from .stats import bootstrap_ci

        df = self.df
        names = self.scores if score is None else [self._score(score)]
        groups = df.groupby(self.factors, sort=False, dropna=False) if self.factors else [((), df)]
        out = []
        for key, part in groups:
            key = key if isinstance(key, tuple) else (key,)
            row = dict(zip(self.factors, key), n=len(part), s_per_image=float(part["duration_s"].mean()))
            for name in names:
                mean, low, high = bootstrap_ci(part[name], level=level)
                row.update({name: mean, f"{name}_ci_low": low, f"{name}_ci_high": high})
            out.append(row)
        return pd.DataFrame(out)

    def compare(self, a: dict, b: dict, score: str | None = None, level: float = 0.95):
        """Paired comparison of configuration a against b over the same prompts and seeds:
        the mean difference (a - b) with ci_low and ci_high, and whether it is within noise."""
        from .stats import paired_difference

        score = self._score(score)
        df = self.df
        pick_a, pick_b = self._select(df, a), self._select(df, b)
        paired = pick_a.merge(pick_b, on=["prompt_index", "seed"], suffixes=("_a", "_b"))
        if paired.empty:
            raise ParamError(f"compare: no prompt and seed was run under both {a} and {b}")
        return paired_difference(paired[f"{score}_a"], paired[f"{score}_b"], score, a, b, level=level)

    def _select(self, df, config: dict):
        config = canonical(config, "compare")
        unknown = sorted(set(config) - set(self.factors))
        if unknown:
            raise ParamError(f"compare: {', '.join(unknown)} was not varied here; varied: "
                             f"{', '.join(self.factors) or 'nothing'}")
        mask = df.index == df.index
        for key, value in config.items():
            mask &= df[key].map(lambda v: v == value or str(v) == str(value)).to_numpy()
        rows = df[mask]
        if rows.empty:
            values = {k: sorted(map(str, df[k].unique())) for k in config}
            raise ParamError(f"compare: no rows with {config}; values here: {values}")
        return rows

    # ---- plots (matplotlib, imported when drawn) ---------------------------------------------
    def plot(self, x: str, score: str | None = None, by: str | None = None, ax=None):
        """Mean score against parameter x with CI error bars (one line per value of `by`)."""
        from .plots import score_vs_param

        return score_vs_param(self, canonical({x: 0}, "plot").popitem()[0], self._score(score), by, ax)

    def frontier(self, score: str | None = None, ax=None):
        """Seconds per image against mean score per configuration: the quality/speed frontier."""
        from .plots import frontier

        return frontier(self, self._score(score), ax)

    def best_worst(self, score: str | None = None, k: int = 3, cell: int = 96):
        """One row per configuration: its k best and k worst images by score (a PIL image)."""
        from .plots import best_worst

        return best_worst(self, self._score(score), k, cell)

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self) -> str:
        reused = sum(r["reused"] for r in self.rows)
        state = "" if self.status == "ok" and len(self) == self.planned else \
            f" · {self.status.upper()} ({len(self)}/{self.planned} images)"
        return (f"evaluation on {self.prompt_set!r}: {len(self)} images ({reused} reused from the log) · "
                f"varied: {', '.join(self.factors) or 'nothing'} · scores: {', '.join(self.scores)}{state}")

    def __repr__(self) -> str:
        return f"Evaluation({self.caption()})"

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(self.caption())}</p>" + self.summary().to_html(index=False, float_format="%.3g")
