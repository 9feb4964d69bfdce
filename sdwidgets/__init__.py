"""sdwidgets: Stable Diffusion in Jupyter.

    %load_ext sdwidgets          # %%sd and %sd
    import sdwidgets as sdw
    run = sdw.session().generate("a red circle on a blue background", seed=1)

Importing this package is cheap: torch and diffusers load on the first generation.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The session module is light (no torch at import). Importing its names here keeps
# `sdw.session` the function: a lazily imported submodule would shadow it.
from .session import Session, session, set_session  # noqa: E402

# public name -> module that defines it (imported on first access)
_LAZY = {
    "GenerationParams": "params", "Control": "controlnet", "Run": "run",
    "ExperimentLog": "log", "SAMPLER_NAMES": "schedulers", "Options": "options",
    "ParamError": "errors", "SDWidgetsError": "errors", "OutOfMemoryError": "errors",
    "DEFAULT_MODEL": "models", "BUILTIN_MODELS": "models",
    "Dashboard": "widgets.dashboard", "train_lora": "training.lora",
    "PromptSet": "evaluation.promptset", "Evaluation": "evaluation.design",
    "outpaint_canvas": "modes.inpaint",
}
__all__ = sorted(_LAZY) + ["Session", "load_ipython_extension", "session", "set_session"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sdwidgets' has no attribute {name!r}")


def __dir__():
    return __all__


def load_ipython_extension(ipython):
    """`%load_ext sdwidgets`: registers %%sd and %sd (the magic module imports no torch)."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload_ipython_extension as unload

    unload(ipython)
