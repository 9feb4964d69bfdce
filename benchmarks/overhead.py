"""Session.generate against the bare diffusers pipeline, and the cost of a step preview.

    python benchmarks/overhead.py [--model shapes] [--steps 20] [--rounds 10] [--images 1 4] [--sd15-step]

Runs alternate (bare, session, bare, session, ...) on the same loaded pipeline and the
same arguments, with previews on, so both see the same machine state: for one image, and
for four (one bare batched call with one generator per image against a 4-image run).
Prints medians and the ratios (goals <= 1.03 for one image, <= 1.05 for four), and the
preview cost per step as a share of a denoising step. --sd15-step also times one denoising step of a randomly initialised UNet with
Stable Diffusion 1.5's architecture at 512x512 (64x64 latents, CFG batch of 2), to put
the preview cost at SD1.5 size in proportion (nothing is downloaded).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--images", type=int, nargs="+", default=[1, 4], help="images per run (one batched call each)")
    ap.add_argument("--sd15-step", action="store_true")
    args = ap.parse_args()

    import torch

    import sdwidgets as sdw
    from sdwidgets.preview import SD15_FACTORS, LatentRGB

    s = sdw.Session(log_dir=tempfile.mkdtemp(), model=args.model, progress=False)
    pipe = s.pipeline()
    prompt = "a red circle on a blue background"
    original = type(pipe.scheduler).from_config(pipe.scheduler.config)
    print(f"model {s.resolve().name!r}, {args.steps} steps, {args.rounds} alternating rounds, "
          f"device {s.device}, torch threads {torch.get_num_threads()}")
    for n in args.images:
        s.generate(prompt, seed=0, steps=args.steps, num_images=n)          # warm-up both paths
        bare_times, session_times, preview_costs, step_costs = [], [], [], []
        for r in range(args.rounds):
            pipe.scheduler = type(original).from_config(original.config)
            generators = [torch.Generator("cpu").manual_seed(r + k) for k in range(n)]
            t = time.perf_counter()
            pipe(prompt, num_inference_steps=args.steps, guidance_scale=5.0, num_images_per_prompt=n,
                 generator=generators[0] if n == 1 else generators)            # one bare batched call
            bare_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            run = s.generate(prompt, seed=r, steps=args.steps, guidance_scale=5.0, num_images=n)
            session_times.append(time.perf_counter() - t)
            preview_costs.append(run.preview_seconds / len(run.frames))
            step_costs.append(statistics.median(run.step_times))
        pipe.scheduler = original
        bare, ours = statistics.median(bare_times), statistics.median(session_times)
        preview, step = statistics.median(preview_costs), statistics.median(step_costs)
        print(f"  {n} image(s): bare pipeline median {bare * 1000:8.1f} ms, Session.generate median "
              f"{ours * 1000:8.1f} ms (previews on, logged to disk), ratio session/bare {ours / bare:6.3f} "
              f"(goal <= {1.03 if n == 1 else 1.05})")
        print(f"              preview per step {preview * 1e6:8.1f} us = {100 * preview / step:.2f}% of this model's step")

    if args.sd15_step:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).eval()
        latents = torch.randn(2, 4, 64, 64)
        context = torch.randn(2, 77, 768)
        with torch.no_grad():
            unet(latents, 500, context)                             # warm-up
            t = time.perf_counter()
            unet(latents, 500, context)
            sd15_step = time.perf_counter() - t
        rgb = LatentRGB(SD15_FACTORS, [0.0, 0.0, 0.0])
        one = torch.randn(1, 4, 64, 64)
        rgb.to_images(one)
        t = time.perf_counter()
        for _ in range(50):
            rgb.to_images(one)   # x0 preview
            rgb.to_images(one)   # noisy-latent preview
        sd15_preview = (time.perf_counter() - t) / 50
        print(f"  SD1.5-size step (UNet 860M, 64x64 latents, CFG batch 2): {sd15_step:.2f} s; "
              f"both previews {sd15_preview * 1000:.2f} ms = {100 * sd15_preview / sd15_step:.3f}% of a step (goal < 2%)")


if __name__ == "__main__":
    main()
