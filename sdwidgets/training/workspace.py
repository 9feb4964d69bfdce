"""Where the recipe works and how long each stage may run: paths, budgets, the timings record,
and the one budgeted training loop that every stage shares (cosine schedule over wall-clock time,
progress bar, loss curve, periodic checkpoints)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("SDW_TRAIN_WORK", ROOT / "training-work"))
ASSET = Path(os.environ.get("SDW_ASSET_DIR", Path(__file__).resolve().parents[1] / "assets" / "shapes"))
TIMINGS = WORK / "timings.json"
SEED = 1234

# Wall-clock budgets (seconds) of the stages on the 2-core CPU, and the size of the captioned world.
VAE_PROBE_S = float(os.environ.get("SDW_VAE_PROBE_S", 120))
VAE_S = float(os.environ.get("SDW_VAE_S", 660))
DECODER_S = float(os.environ.get("SDW_DECODER_S", 360))
ADAPT_S = float(os.environ.get("SDW_ADAPT_S", 420))
BASE_S = float(os.environ.get("SDW_BASE_S", 1350))
RESTART_S = float(os.environ.get("SDW_RESTART_S", 1600))
RESTART2_S = float(os.environ.get("SDW_RESTART2_S", 720))
SHARPEN_S = float(os.environ.get("SDW_SHARPEN_S", 390))
SHARPEN2_S = float(os.environ.get("SDW_SHARPEN2_S", 360))
POLISH_S = float(os.environ.get("SDW_POLISH_S", 900))
CONTROLNET_S = float(os.environ.get("SDW_CONTROLNET_S", 420))
LORA_S = float(os.environ.get("SDW_LORA_S", 270))
TINY_DECODER_S = float(os.environ.get("SDW_TINY_DECODER_S", 300))
N_TRAIN = int(os.environ.get("SDW_N_TRAIN", 24000))
# The stages of the 2-hour recipe, in order (``python -m sdwidgets.training.shapes all``). `polish` is
# not in it: it moved shape little and cost the ring LoRA rings (model card); the shipped weights
# ran it, and it stays a stage of its own.
ALL = ["vae", "base", "restart", "restart2", "sharpen", "sharpen2", "decoder", "adapt", "export", "controlnet", "lora", "export", "tiny-decoder", "evaluate"]


def recipe_training_s() -> float:
    """Seconds of training in ``all`` with these budgets: one VAE probe counts (the chosen one is
    continued; the other is overhead), ``polish`` does not (it is not in ``all``)."""
    return (VAE_PROBE_S + VAE_S + DECODER_S + ADAPT_S + BASE_S + RESTART_S + RESTART2_S + SHARPEN_S + SHARPEN2_S
            + CONTROLNET_S + LORA_S + TINY_DECODER_S)


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def record(key: str, value) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    data = recorded()
    data[key] = value
    TIMINGS.write_text(json.dumps(data, indent=1))


def recorded() -> dict:
    return json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}


def lr_at(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


class Budget:
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

    budget = Budget(seconds, state.get("elapsed", 0.0))
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


def load_asset_pipe(folder: Path = ASSET):
    """The shipped model folder as a float32 StableDiffusionPipeline, progress bars off."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
