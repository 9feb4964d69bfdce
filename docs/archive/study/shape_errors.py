"""Which shapes does a model get wrong, and how? A confusion table of prompted vs read shape.

    SDW_ASSET_DIR=<asset folder> [SDW_WEIGHTS=<folder with unet/, text_encoder/>] python study/shape_errors.py [N] [GUIDANCE ...]

Generates the first N evaluation prompts (as ``shapes evaluate`` does: same prompts, same seeds,
20 Euler steps) at each guidance scale, reads every image with the analyser and prints, per
prompted shape, what was read and the median bounding-box fill (square ~1.0, circle ~0.785,
triangle ~0.5; the analyser's cut-offs are 0.9 and 0.65). One JSON line per guidance goes to
stdout's last lines for the study's results folder.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter

import numpy as np

from sdwidgets.training import world
from sdwidgets.training.analyse import analyse
from sdwidgets.training.evaluate import eval_prompts, generate
from sdwidgets.training.workspace import load_asset_pipe


def confusion(scenes, images) -> dict:
    out: dict = {}
    for sc, im in zip(scenes, images):
        r = analyse(im)
        row = out.setdefault(sc.shape, {"read": Counter(), "fills": []})
        row["read"][str(r.shape)] += 1
        row["fills"].append(r.fill)
    return {s: {"n": sum(v["read"].values()), "read": dict(v["read"]),
                "median_fill": round(float(np.median(v["fills"])), 3)} for s, v in sorted(out.items())}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 96
    guidances = [float(g) for g in sys.argv[2:]] or [7.5]
    pipe = load_asset_pipe()
    if os.environ.get("SDW_WEIGHTS"):  # a base trained elsewhere, with the asset's VAE
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        pipe.unet = UNet2DConditionModel.from_pretrained(os.environ["SDW_WEIGHTS"] + "/unet")
        pipe.text_encoder = CLIPTextModel.from_pretrained(os.environ["SDW_WEIGHTS"] + "/text_encoder")
    scenes = eval_prompts(n)
    prompts = [world.caption_of(sc) for sc in scenes]
    for g in guidances:
        images = generate(pipe, prompts, list(range(n)), guidance_scale=g)
        table = confusion(scenes, images)
        right = sum(v["read"].get(s, 0) for s, v in table.items())
        print(f"guidance {g}: shape {right / n:.1%}")
        for s, v in table.items():
            print(f"  {s:9s} n={v['n']:3d}  median fill {v['median_fill']:.3f}  read as {v['read']}")
        print(json.dumps({"guidance": g, "n": n, "shape": round(right / n, 4), "by_shape": table}))


if __name__ == "__main__":
    main()
