"""How true and how costly each step-preview method is (sdwidgets.previewers).

    python benchmarks/previews.py [--steps 20] [--methods tiny,approx,full] [--sd15]

On the embedded model and a fixed set of prompts, for each method: the mean CIEDE2000 colour
difference (skimage.color.deltaE_ciede2000, per pixel, averaged) between
  * the last step's x0 preview and the final image,
  * each step's x0 preview and the exact VAE decode of the same x0 (mean over steps, and the
    worst step),
and the preview cost per step (both series, x0 and noisy, as the recorder makes them) as a share
of a denoising step, timed in the same process, method by method on the same prompts.
--sd15 also times one denoising step of a randomly initialised SD 1.5-size UNet (512x512, CFG
batch 2) against each method at that size (TAESD's architecture with random weights for tiny,
the SD 1.5 VAE architecture for full); nothing is downloaded.
Under ΔE 2 is hard to see; above 10 reads as a different colour.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

PROMPTS = [
    "a red circle on a blue background", "a green square on a white background",
    "a purple circle on an orange background", "a yellow triangle on a black background",
    "a blue square on a yellow background", "a white circle on a green background",
    "an orange triangle on a purple background", "a black square on a red background",
]


def delta_e(a, b) -> float:
    """Mean CIEDE2000 between two PIL images of the same size."""
    import numpy as np
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab = [rgb2lab(np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0) for im in (a, b)]
    return float(deltaE_ciede2000(*lab).mean())


def embedded(steps: int, methods: list[str], seed: int) -> None:
    import torch

    import sdwidgets as sdw

    s = sdw.Session(log_dir=tempfile.mkdtemp(), progress=False)
    s.generate(PROMPTS[0], seed=seed, steps=steps, preview_method="none")        # warm-up
    base = []
    for prompt in PROMPTS:                                                       # plain step time, no previews
        run = s.generate(prompt, seed=seed, steps=steps, preview_method="none")
        base += run.step_times[1:]
    step = statistics.median(base)
    print(f"embedded model, {len(PROMPTS)} prompts, {steps} steps, seed {seed}, torch threads "
          f"{torch.get_num_threads()}; denoising step (no previews) median {step * 1000:.1f} ms")
    print(f"{'method':8} {'last step vs final':>18} {'steps vs exact (mean/worst)':>28} {'cost/step':>10} {'share':>7}")
    for method in methods:
        last, per_step, worst, costs = [], [], [], []
        for prompt in PROMPTS:
            timed = s.generate(prompt, seed=seed, steps=steps, preview_method=method)
            costs.append(timed.preview_seconds / len(timed.frames))
            run = s.generate(prompt, seed=seed, steps=steps, preview_method=method, decode_every=1, preview="x0")
            last.append(delta_e(run.frames[-1], run.images[0]))
            errors = [delta_e(f, run.decoded_frames[k]) for f, k in zip(run.frames, run.steps)]
            per_step.append(statistics.mean(errors))
            worst.append(max(errors))
        cost = statistics.median(costs)
        print(f"{method:8} {statistics.mean(last):18.2f} {statistics.mean(per_step):19.2f} / {max(worst):6.2f} "
              f"{cost * 1000:8.2f}ms {100 * cost / step:6.1f}%")


def sd15(methods: list[str]) -> None:
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    from sdwidgets.preview import SD15_FACTORS, LatentRGB
    from sdwidgets.previewers import Previewer, TinyDecoder, VaeDecoder

    def timed(fn, n=1):
        with torch.no_grad():
            fn()
            t = time.perf_counter()
            for _ in range(n):
                fn()
        return (time.perf_counter() - t) / n

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).eval()
    latents, context = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 768)
    step = timed(lambda: unet(latents, 500, context))
    converters = {"approx": lambda: LatentRGB(SD15_FACTORS, [0.0, 0.0, 0.0]),
                  "tiny": lambda: TinyDecoder(AutoencoderTiny()),       # TAESD's architecture
                  "full": lambda: VaeDecoder(AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                                           down_block_types=("DownEncoderBlock2D",) * 4,
                                                           up_block_types=("UpDecoderBlock2D",) * 4,
                                                           sample_size=512, scaling_factor=0.18215).eval())}
    print(f"SD1.5 size (random weights, 512x512): denoising step (UNet 860M, CFG batch 2) {step:.2f} s")
    both = torch.randn(2, 4, 64, 64)                  # x0 and noisy of one image, one call
    for method in methods:
        previewer = Previewer(method, converters[method](), (512, 512))
        cost = timed(lambda: previewer.to_images(both), n=3 if method != "full" else 1)
        print(f"  {method:8} both previews {cost * 1000:9.1f} ms = {100 * cost / step:6.2f}% of a step")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--methods", default="tiny,approx,full")
    ap.add_argument("--sd15", action="store_true")
    args = ap.parse_args()
    methods = args.methods.split(",")
    embedded(args.steps, methods, args.seed)
    if args.sd15:
        sd15(methods)


if __name__ == "__main__":
    main()
