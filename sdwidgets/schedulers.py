"""Sampler names people know (AUTOMATIC1111 style) <-> diffusers schedulers.

The table follows diffusers' own mapping of A1111 names. A scheduler is rebuilt
from the model's own scheduler config on every run (cheap, and it never carries
state from one run into the next); the model itself is never reloaded.
"""
from __future__ import annotations

import inspect

from .errors import ParamError
from .validate import did_you_mean

# name -> (diffusers class, config overrides)
SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler Karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
    "TCD": ("TCDScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    "Flow Euler": ("FlowMatchEulerDiscreteScheduler", {}),   # SD3 family
}
SAMPLER_NAMES = tuple(SAMPLERS)
_BY_LOWER = {name.lower(): name for name in SAMPLERS}
# Config values that tell apart names sharing a class, with their defaults.
_DISTINGUISHING = {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++", "skip_prk_steps": False}


def _flags(cls) -> dict:
    """The distinguishing flags `cls` takes, at their plain defaults."""
    own_keys = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in _DISTINGUISHING.items()
            if k in own_keys and (k != "algorithm_type" or cls.__name__.startswith("DPMSolver"))}


def check_sampler(name) -> str:
    """The canonical sampler name, or ParamError listing the valid ones (case-insensitive)."""
    if isinstance(name, str) and name.strip().lower() in _BY_LOWER:
        return _BY_LOWER[name.strip().lower()]
    raise ParamError(f"scheduler: unknown sampler {name!r}; {did_you_mean(name, SAMPLER_NAMES)}")


def _is_flow(cls_name: str) -> bool:
    return cls_name.startswith("FlowMatch")


def make_scheduler(name: str | None, original):
    """A fresh scheduler for one run: `name`'s class built from the model's original scheduler
    config (None: the model's own). ParamError if the model cannot use that sampler."""
    import diffusers

    if name is None:
        return type(original).from_config(original.config)
    cls_name, overrides = SAMPLERS[check_sampler(name)]
    cls = getattr(diffusers, cls_name)
    # Flow-matching models (SD3) and noise-prediction models (SD1/2/XL) take disjoint samplers;
    # within a family any sampler runs (e.g. LCM on SD1.5 with an LCM-LoRA).
    flow = _is_flow(type(original).__name__)
    if _is_flow(cls_name) != flow:
        usable = [n for n, (c, _) in SAMPLERS.items() if _is_flow(c) == flow]
        raise ParamError(f"scheduler: {name!r} does not work with this model; choose one of: {', '.join(usable)}")
    # Reset the distinguishing flags so "Euler" is plain Euler even if the model's config uses Karras.
    own_keys = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in original.config.items() if k in own_keys}  # no "ignored key" warnings
    return cls.from_config(config, **{**_flags(cls), **overrides})


def sampler_name(scheduler) -> str:
    """Best A1111 name for a scheduler instance (falls back to the class name)."""
    cls_name = type(scheduler).__name__
    flags = _flags(type(scheduler))  # configs carry foreign keys too: compare only the class's own

    def value(key, default):
        found = scheduler.config.get(key)
        return default if found is None else found

    for name, (candidate, overrides) in SAMPLERS.items():
        if candidate == cls_name and all(value(k, d) == overrides.get(k, d) for k, d in flags.items()):
            return name
    return cls_name


def check_steps(scheduler, steps: int) -> None:
    """ParamError, before denoising, if `scheduler` cannot run `steps` steps.

    Most schedulers index tables of num_train_timesteps entries and fail on the last step
    (IndexError) or give NaN from num_train_timesteps steps on; LCM/TCD refuse more than
    their original_inference_steps. Trying set_timesteps on a copy catches the rest.
    """
    import copy

    name = sampler_name(scheduler)
    train = scheduler.config.get("num_train_timesteps")
    if train and steps >= train:
        raise ParamError(f"steps must be < {train} with {name} (the model's training timesteps), got {steps}")
    try:
        copy.deepcopy(scheduler).set_timesteps(steps)
    except (ValueError, IndexError, AssertionError) as exc:
        raise ParamError(f"steps: {name} cannot run {steps} steps ({exc})") from None
