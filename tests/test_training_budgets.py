"""The recipe's budgets are arguments: importing a training module reads no ``SDW_`` variable;
the command reads them once when it starts (:meth:`Budgets.from_env`) and hands them to the stages."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Import every module of sdwidgets.training with os.environ replaced by a mapping that notes each
# SDW_ key looked up, and with budgets that would not parse; then let Budgets.from_env read them.
_WATCH = r'''
import importlib, json, os, pkgutil

class Watched(dict):
    reads = []
    def _note(self, key):
        if str(key).startswith("SDW_"):
            Watched.reads.append(key)
    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)
    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)
    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)

os.environ = Watched(os.environ)
import sdwidgets.training as training
names = [f"sdwidgets.training.{m.name}" for m in pkgutil.iter_modules(training.__path__)]
for name in names:
    importlib.import_module(name)
at_import = list(Watched.reads)
from sdwidgets.training.workspace import Budgets
try:
    Budgets.from_env()
    error = None
except ValueError as e:
    error = str(e)
print(json.dumps(dict(modules=names, at_import=at_import, after_call=Watched.reads[len(at_import):], error=error)))
'''


def test_importing_the_training_modules_reads_no_budget_from_the_environment():
    bogus = {"SDW_BASE_S": "two hours", "SDW_N_TRAIN": "many", "SDW_PROBE_N": "x", "SDW_ADAPT_PAIRS": "x",
             "SDW_ADAPT_EDGE_WEIGHT": "x", "SDW_TRAIN_WORK": "/nonexistent/work"}
    done = subprocess.run([sys.executable, "-c", _WATCH], env=os.environ | bogus, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"sdwidgets.training.shapes", "sdwidgets.training.denoiser", "sdwidgets.training.codec",
            "sdwidgets.training.losses", "sdwidgets.training.workspace"} <= set(out["modules"])
    assert out["at_import"] == []
    # ... and the budgets are read when asked for, with a one-line error naming the variable
    assert out["after_call"][:5] == ["SDW_VAE_PROBE_S", "SDW_VAE_S", "SDW_DECODER_S", "SDW_ADAPT_S", "SDW_BASE_S"]
    assert out["error"] == "SDW_BASE_S must be a number, got 'two hours'"


def test_budgets_from_env_takes_the_overrides_and_keeps_the_other_defaults():
    from sdwidgets.training.workspace import Budgets, recipe_training_s

    b = Budgets.from_env({"SDW_BASE_S": "2000", "SDW_N_TRAIN": "256", "SDW_HOME": "ignored"})
    assert b.base_s == 2000.0 and b.n_train == 256 and isinstance(b.n_train, int)
    assert b.restart_s == Budgets().restart_s == 1600.0  # untouched fields keep the recipe's default
    assert recipe_training_s(b) == recipe_training_s() + 2000 - 1350
    with pytest.raises(ValueError, match=r"SDW_N_TRAIN must be an integer, got '2\.5'"):
        Budgets.from_env({"SDW_N_TRAIN": "2.5"})


def test_the_command_names_a_bad_budget_before_any_work_and_help_lists_the_stages(tmp_path, monkeypatch, capsys):
    from sdwidgets.training.shapes import STAGES, main

    work = tmp_path / "work"
    monkeypatch.setenv("SDW_TRAIN_WORK", str(work))
    monkeypatch.setenv("SDW_BASE_S", "soon")
    with pytest.raises(SystemExit, match="SDW_BASE_S must be a number, got 'soon'"):
        main(["base"])
    assert not work.exists()  # nothing was started
    main(["--help"])
    printed = capsys.readouterr().out
    assert "python -m sdwidgets.training.shapes [stage]" in printed
    assert all(f"\n    {name} " in printed for name in STAGES) and not work.exists()
