"""Bootstrap confidence intervals: of a mean, and of a paired mean difference.

Percentile bootstrap with a fixed seed, so a summary printed twice says the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of the mean of `values` (NaNs dropped); NaNs when nothing is left."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(x.mean()), float(low), float(high)


@dataclass(frozen=True)
class Difference:
    """Mean of score(a) - score(b) over the same prompts and seeds, with its bootstrap interval."""

    score: str
    a: dict
    b: dict
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    level: float = LEVEL

    @property
    def within_noise(self) -> bool:
        """True when the interval contains 0: the data cannot tell a from b."""
        return not (self.ci_low > 0 or self.ci_high < 0)

    @property
    def verdict(self) -> str:
        if self.n == 0:
            return f"no pairs to compare for {self.score}"
        ci = f"{self.level:.0%} CI [{self.ci_low:+.3g}, {self.ci_high:+.3g}], n={self.n} pairs"
        if self.within_noise:
            return (f"{self.score}: {_label(self.a)} vs {_label(self.b)}: difference {self.mean_diff:+.3g} is within "
                    f"noise ({ci}); this data cannot tell them apart")
        better = _label(self.a) if self.mean_diff > 0 else _label(self.b)
        return (f"{self.score}: {_label(self.a)} - {_label(self.b)} = {self.mean_diff:+.3g} ({ci}): {better} "
                "scores higher")

    def __str__(self) -> str:
        return self.verdict

    def _repr_html_(self) -> str:
        import html

        return f"<p><b>{html.escape(self.verdict)}</b></p>"


def paired_difference(a_values, b_values, score: str, a: dict, b: dict, n_boot: int = N_BOOT,
                      level: float = LEVEL, seed: int = 0) -> Difference:
    """Paired comparison: a_values[i] and b_values[i] are the same prompt and seed."""
    a_arr, b_arr = np.asarray(a_values, dtype=float), np.asarray(b_values, dtype=float)
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    mean, low, high = bootstrap_ci(a_arr - b_arr, n_boot, level, seed)
    return Difference(score, dict(a), dict(b), int(keep.sum()), float(a_arr.mean()) if len(a_arr) else float("nan"),
                      float(b_arr.mean()) if len(b_arr) else float("nan"), mean, low, high, level)


def _label(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "all"
