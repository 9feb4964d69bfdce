"""Where the recipe works and how long each stage may run: paths, budgets, the timings record,
the one budgeted training loop that every stage shares (cosine schedule over wall-clock time,
progress bar, loss curve, periodic checkpoints) and its checkpoints, and the pipelines of the
working and the shipped folders.

Nothing here reads the environment when imported: the paths' overrides (``SDW_TRAIN_WORK``,
``SDW_ASSET_DIR``) are read by :func:`work_dir` and :func:`asset_dir` when called, the budgets'
(``SDW_BASE_S``, ...) by :meth:`Budgets.from_env`, which the CLI calls once and passes on."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK = ROOT / "training-work"
DEFAULT_ASSET = Path(__file__).resolve().parents[1] / "assets" / "shapes"
SEED = 1234


def work_dir() -> Path:
    """The working folder (checkpoints, latents, timings): ``SDW_TRAIN_WORK`` or training-work/."""
    return Path(os.environ.get("SDW_TRAIN_WORK", DEFAULT_WORK))


def asset_dir() -> Path:
    """The shipped model folder the recipe exports to: ``SDW_ASSET_DIR`` or sdwidgets/assets/shapes."""
    return Path(os.environ.get("SDW_ASSET_DIR", DEFAULT_ASSET))


def timings_path() -> Path:
    return work_dir() / "timings.json"


@dataclass(frozen=True)
class Budgets:
    """Wall-clock budgets (seconds) of the stages on the 2-core CPU, the sizes of what they train,
    probe and score on, and the adapt loss's two weights. The defaults are the recipe's; each
    field can be overridden by the environment variable ``SDW_<FIELD>`` (``SDW_BASE_S=2000``),
    read by :meth:`from_env` only."""
    vae_probe_s: float = 120.0
    vae_s: float = 660.0
    decoder_s: float = 360.0
    adapt_s: float = 420.0
    base_s: float = 1350.0
    restart_s: float = 1600.0
    restart2_s: float = 720.0
    sharpen_s: float = 390.0
    sharpen2_s: float = 360.0
    polish_s: float = 900.0
    controlnet_s: float = 420.0
    lora_s: float = 270.0
    tiny_decoder_s: float = 300.0
    n_train: int = 24000     # images of the captioned world the base trains on
    adapt_pairs: int = 1536  # img2img candidates for the adapt stage's generated pairs
    adapt_edge_weight: float = 4.0  # see codec.stage_adapt
    adapt_palette_ce: float = 1.0
    probe_n: int = 48        # prompts of the restart's position probe
    eval_n: int = 240        # prompts of the evaluation (evaluate.stage_evaluate)
    eval_small: int = 48

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Budgets":
        """The defaults with the ``SDW_<FIELD>`` overrides found in ``environ`` (os.environ)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            var = f"SDW_{f.name.upper()}"
            if var in environ:
                kind = type(f.default)
                try:
                    values[f.name] = kind(environ[var])
                except ValueError:
                    raise ValueError(f"{var} must be {'an integer' if kind is int else 'a number'}, "
                                     f"got {environ[var]!r}") from None
        return cls(**values)


DEFAULT_BUDGETS = Budgets()

# The stages of the 2-hour recipe, in order (``python -m sdwidgets.training.shapes all``). `polish` is
# not in it: it moved shape little and cost the ring LoRA rings (model card); the shipped weights
# ran it, and it stays a stage of its own.
ALL = ["vae", "base", "restart", "restart2", "sharpen", "sharpen2", "decoder", "adapt", "export", "controlnet", "lora", "export", "evaluate"]


def recipe_training_s(budgets: Budgets = DEFAULT_BUDGETS) -> float:
    """Seconds of training in ``all`` with these budgets: one VAE probe counts (the chosen one is
    continued; the other is overhead), ``polish`` does not (it is not in ``all``)."""
    b = budgets
    return (b.vae_probe_s + b.vae_s + b.decoder_s + b.adapt_s + b.base_s + b.restart_s + b.restart2_s + b.sharpen_s
            + b.sharpen2_s + b.controlnet_s + b.lora_s)


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def record(key: str, value) -> None:
    work_dir().mkdir(parents=True, exist_ok=True)
    data = recorded()
    data[key] = value
    timings_path().write_text(json.dumps(data, indent=1))


def recorded() -> dict:
    timings = timings_path()
    return json.loads(timings.read_text()) if timings.exists() else {}


def lr_at(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


class WallClockSchedule:
    """Cosine schedule over a wall-clock budget: the step count is re-estimated as we go."""

    def __init__(self, seconds: float, elapsed: float = 0.0):
        self.seconds, self.t0 = seconds, time.time() - elapsed

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0

    def total_steps(self, step: int) -> int:
        if step < 20:
            return 10 ** 9
        return max(step + 1, int(step * self.seconds / max(self.elapsed, 1e-6)))

    def done(self) -> bool:
        return self.elapsed >= self.seconds


def optimise(opt, loss, params) -> float:
    """One optimiser step with gradient clipping at 1.0; returns the loss as a float."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


def train_for(desc: str, seconds: float, state: dict, opt, base_lr: float, warmup: int,
              step_fn: Callable[[int], float], save: Callable[[], None], curve_every: int = 50,
              save_every_s: float = 120) -> float | None:
    """Run ``step_fn(step)`` until ``seconds`` of training (``state["elapsed"]`` included) are
    spent. ``state`` (step, elapsed, losses) is updated in place so a checkpoint can resume it;
    ``save`` is called every ``save_every_s`` and at the end. Returns the smoothed final loss."""
    from tqdm.auto import tqdm

    budget = WallClockSchedule(seconds, state.get("elapsed", 0.0))
    losses = state.setdefault("losses", [])
    bar = tqdm(desc=desc, unit="step", mininterval=15, file=sys.stdout, initial=state["step"])
    last_save, run_loss = time.time(), None
    while not budget.done():
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.total_steps(step), base_lr, warmup=warmup)
        loss = step_fn(step)
        run_loss = loss if run_loss is None else 0.98 * run_loss + 0.02 * loss
        state["step"], state["elapsed"] = step + 1, budget.elapsed
        if step % curve_every == 0:
            losses.append(round(run_loss, 5))
            bar.set_postfix(loss=f"{run_loss:.4f}")
        bar.update(1)
        if time.time() - last_save > save_every_s:
            save()
            last_save = time.time()
    bar.close()
    save()
    return run_loss


def resume(ckpt: Path, modules: dict, opt) -> dict:
    """Load a stage's checkpoint (module state dicts + optimiser) and return its loop state."""
    if not ckpt.exists():
        return {"step": 0, "elapsed": 0.0, "losses": []}
    import torch

    c = torch.load(ckpt, weights_only=False)
    for name, module in modules.items():
        module.load_state_dict(c[name])
    opt.load_state_dict(c["opt"])
    return c["state"]


def saver(ckpt: Path, modules: dict, opt, state: dict):
    """A ``save()`` for :func:`train_for`: module state dicts, optimiser and loop state."""
    import torch

    return lambda: torch.save({k: m.state_dict() for k, m in modules.items()}
                              | {"opt": opt.state_dict(), "state": state}, ckpt)


def load_asset_pipe(folder: Path | None = None):
    """The shipped model folder (default :func:`asset_dir`) as a float32 StableDiffusionPipeline, progress bars off."""
    import torch
    from diffusers import StableDiffusionPipeline

    folder = asset_dir() if folder is None else folder
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def work_pipe():
    """The pipeline of the working folder's base and VAE (float32, progress bars off)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from .architecture import default_scheduler

    base = work_dir() / "base"
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(work_dir() / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(base / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(base / "unet"),
        scheduler=default_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
