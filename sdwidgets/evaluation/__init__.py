"""Evaluation: fixed prompt sets, scorers, designs run through the Session, statistics and plots.

    ps = sdw.PromptSet.from_template("a {color} {shape} on a {bg} background", {...}, n=24, seed=0)
    ev = s.evaluate(ps, grid={"steps": [2, 20]}, seeds=[0, 1])
    ev.summary(); ev.compare({"steps": 20}, {"steps": 2}, score="adherence")

Light at import (no numpy, torch or matplotlib): every name loads its module on first use.
"""
from __future__ import annotations

import importlib

_LAZY = {"PromptSet": "promptset", "as_prompt_set": "promptset", "BUILTIN": "scorers", "ClipScore": "scorers",
         "adherence": "scorers", "colourfulness": "scorers", "sharpness": "scorers",
         "Evaluation": "design", "evaluate": "design", "bootstrap_ci": "stats", "paired_difference": "stats"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sdwidgets.evaluation' has no attribute {name!r}")
