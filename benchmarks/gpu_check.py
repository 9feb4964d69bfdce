"""The embedded model on a GPU, as a user with one gets it: Session picks CUDA and fp16.

    python benchmarks/gpu_check.py [--prompts 240] [--out DIR]

Runs on a machine with CUDA (it refuses to run without). Checks, side by side in one run:
1. the evaluation's grammar prompts and CPU seeds through the Session's own pipeline, fp16
   and fp32 on the GPU: do the model card's CPU scores hold in half precision?
2. Session.generate: per-image time, a log rerun that gives the same pixels, and a change of
   sampler, guidance and LoRA strength that keeps the loaded UNet (no reload);
3. the ring LoRA's strength dial and the canny ControlNet through Session, in fp16;
4. train_lora on CUDA with the recipe's ring settings, loaded back and used at strength 1.
Prints one JSON object; exits 1 if a check fails (the numbers say which).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def grammar_scores(pipe, n: int) -> dict:
    from sdwidgets.training import evaluate, world

    scenes = evaluate.eval_prompts(n)
    t = time.perf_counter()
    images = evaluate.generate(pipe, [world.caption_of(sc) for sc in scenes], list(range(n)),
                               guidance_scale=evaluate.default_guidance())
    hits = evaluate.grammar_hits(scenes, images)
    return {k: round(statistics.mean(v), 4) for k, v in hits.items()} | {"batched_s": round(time.perf_counter() - t, 1)}


def ring_share(session, loras: dict, n: int = 48) -> float:
    """Share of rings on the evaluation's LoRA prompts and seeds, through Session.generate."""
    from sdwidgets.training.analyse import analyse
    from sdwidgets.training.evaluate import ring_prompts

    runs = [session.generate(p, seed=7000 + i, loras=loras, preview="none") for i, p in enumerate(ring_prompts(n))]
    return sum(analyse(run.images[0]).shape == "ring" for run in runs) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=240)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("gpu_check needs CUDA; this machine has none", file=sys.stderr)
        return 2
    import sdwidgets as sdw
    from sdwidgets.training import world
    from sdwidgets.training.analyse import analyse, blob_mask, iou
    from sdwidgets.training.evaluate import control_cases
    from sdwidgets.training.ring import RING_LR, RING_RANK, ring_training_set

    out = Path(args.out or tempfile.mkdtemp())
    res: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    fails: list[str] = []

    # 1. fp16 (the Session's default on CUDA) against fp32, same prompts and seeds
    s = sdw.Session(log_dir=out / "log", progress=False)
    res["session_device"], res["session_dtype"] = s.device, str(s.dtype)
    if not s.device.startswith("cuda") or s.dtype != torch.float16:
        fails.append("session_default")
    s32 = sdw.Session(log_dir=out / "log32", progress=False, dtype=torch.float32)
    res["grammar_fp16"] = grammar_scores(s.pipeline(), args.prompts)
    res["grammar_fp32"] = grammar_scores(s32.pipeline(), args.prompts)
    for key in ("fg", "bg", "shape", "position"):
        if res["grammar_fp16"][key] < res["grammar_fp32"][key] - 0.03:
            fails.append(f"fp16_{key}")
    s32.unload()

    # 2. Session.generate: speed, rerun, no reload on sampler / guidance / LoRA changes
    prompt = "a red circle on a blue background"
    s.generate(prompt, seed=0)                                   # warm-up
    torch.cuda.synchronize()
    times = []
    for i in range(10):
        t = time.perf_counter()
        run = s.generate(prompt, seed=i)
        times.append(time.perf_counter() - t)
    res["session_s_per_image"] = round(statistics.median(times), 4)
    res["frames"] = len(run.frames)
    reading = analyse(run.images[0])
    res["red_circle_reading"] = [reading.fg, reading.bg, reading.shape]
    again = s.log.rerun(run.run_id)
    res["rerun_identical"] = bool(np.array_equal(np.asarray(run.images[0]), np.asarray(again.images[0])))
    unet, loads = s.pipeline().unet, s.loads
    s.generate(prompt, seed=1, scheduler="DPM++ 2M Karras", guidance_scale=7.0, loras={"ring": 0.5})
    s.generate(prompt, seed=1, scheduler="Euler a", guidance_scale=3.0, loras={"ring": 0.9})
    res["unet_kept"] = s.pipeline().unet is unet and s.loads == loads
    if not (res["rerun_identical"] and res["unet_kept"] and res["frames"] == 20):
        fails.append("session")

    # 3. LoRA dial and ControlNet through the Session (fp16)
    res["ring_share"] = {str(w): ring_share(s, {"ring": w}) for w in (0.0, 0.5, 1.0)}
    if not (res["ring_share"]["0.0"] <= 0.1 and res["ring_share"]["1.0"] >= 0.8):
        fails.append("lora_dial")
    ious = []
    for i, (sc, caption) in enumerate(control_cases(48)):
        run = s.generate(caption, seed=5000 + i, preview="none",
                         controls=[sdw.Control("canny", world.edges(world.render(sc)))])
        ious.append(iou(blob_mask(run.images[0]), world.shape_mask(sc)))
    res["controlnet_iou_median"] = round(float(np.median(ious)), 4)
    if res["controlnet_iou_median"] < 0.6:
        fails.append("controlnet")

    # 4. LoRA training on CUDA with the recipe's ring settings, then used through the Session
    images, captions = ring_training_set()
    t = time.perf_counter()
    path = sdw.train_lora(images, captions, base_model=s.resolve().location, output=out / "ring_gpu.safetensors",
                          rank=RING_RANK, steps=1170, lr=RING_LR, batch_size=16, high_noise_share=0.5,
                          progress=False)
    res["train_lora_1170_steps_s"] = round(time.perf_counter() - t, 1)
    s.load_lora(path, "ring_gpu")
    res["ring_gpu_share_at_1"] = ring_share(s, {"ring_gpu": 1.0})
    if res["ring_gpu_share_at_1"] < 0.8:
        fails.append("train_lora")

    res["fails"] = fails
    print(json.dumps(res, indent=1))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
