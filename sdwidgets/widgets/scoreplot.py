"""Scores panel (in the Log tab): mean score against a parameter, with bootstrap error bars,
over the logged images that have that score (log.score / Session.evaluate), one line per sampler.
matplotlib draws it when the panel is used (the `plots` extra); without it, a one-line message."""
from __future__ import annotations

import ipywidgets as W

from .base import Panel, message, short_error

X_CHOICES = (("steps", "steps"), ("CFG", "guidance_scale"), ("sampler", "scheduler"))
ALL_SETS = "all images"


class ScorePlotPanel(Panel):
    def __init__(self, session):
        super().__init__()
        self.session = session
        self.score = W.Dropdown(options=[], description="score", layout=W.Layout(width="220px"))
        self.x = W.Dropdown(options=X_CHOICES, value="steps", description="against", layout=W.Layout(width="200px"))
        self.prompt_set = W.Dropdown(options=[ALL_SETS], description="prompts", layout=W.Layout(width="260px"))
        self.plot = W.Button(description="Plot", icon="line-chart")
        self.figure = W.Image(format="png", layout=W.Layout(max_width="520px"))
        self.status = W.HTML()
        self.on_click(self.plot, self._plot_clicked)
        self.root = W.VBox([W.HBox([self.score, self.x, self.prompt_set, self.plot]), self.status, self.figure])
        self.refresh()

    def refresh(self) -> None:
        """The scores and prompt sets now in the log (keeps the current choices)."""
        log = self.session.log
        names = sorted(log.scores.values)
        self.score.options = names
        sets = [ALL_SETS] + sorted({f"{r['prompt_set']} ({r['prompt_set_hash']})" for r in log._records
                                    if r.get("prompt_set") and r.get("prompt_set_hash")})
        keep = self.prompt_set.value
        self.prompt_set.options = sets
        self.prompt_set.value = keep if keep in sets else ALL_SETS
        self.plot.disabled = not names
        if not names:
            self.status.value = message("no scores in the log yet: s.log.score(name, fn) or s.evaluate(...)")

    def table(self):
        """Per value of the chosen parameter (and sampler): n, mean score, 95% bootstrap CI."""
        import pandas as pd

        from ..evaluation.stats import bootstrap_ci

        df, score, x = self.session.log.df, self.score.value, self.x.value
        if self.prompt_set.value != ALL_SETS:
            df = df[(df["prompt_set"] + " (" + df["prompt_set_hash"] + ")") == self.prompt_set.value]
        df = df.dropna(subset=[score])
        by = ["scheduler"] if x != "scheduler" else []
        rows = []
        for key, part in df.groupby(by + [x], sort=True):
            mean, low, high = bootstrap_ci(part[score])
            rows.append({**dict(zip(by + [x], key if isinstance(key, tuple) else (key,))), "n": len(part),
                         score: mean, "ci_low": low, "ci_high": high})
        return pd.DataFrame(rows)

    def _plot_clicked(self, _button) -> None:
        try:
            self.figure.value = self.draw()
            self.status.value = ""
        except ImportError:
            self.status.value = message("plots need matplotlib: pip install sdwidgets[plots]", "error")
        except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
            self.status.value = message(short_error(exc), "error")

    def draw(self) -> bytes:
        """The plot as PNG bytes."""
        import io

        from matplotlib.figure import Figure     # no pyplot: the notebook's backend stays as it is

        table, score, x = self.table(), self.score.value, self.x.value
        if table.empty:
            raise ValueError(f"no images with the score {score!r} here")
        fig = Figure(figsize=(5, 3))
        ax = fig.subplots()
        groups = table.groupby("scheduler") if x != "scheduler" else [(None, table)]
        for name, part in groups:
            ax.errorbar(part[x].astype(str) if x == "scheduler" else part[x], part[score],
                        yerr=[part[score] - part["ci_low"], part["ci_high"] - part[score]], marker="o", capsize=3,
                        label=name)
        ax.set_xlabel(dict((v, k) for k, v in X_CHOICES)[x])
        ax.set_ylabel(f"{score} (mean, 95% CI)")
        if x != "scheduler":
            ax.legend(fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()
