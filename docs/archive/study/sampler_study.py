"""Which sampler draws this model best at 20 steps? fg / bg / shape / position per sampler.

    SDW_ASSET_DIR=<asset folder> python study/sampler_study.py N GUIDANCE "Euler" "DPM++ 2M Karras" ...

Same prompts and seeds as ``shapes evaluate`` (its first N grammar prompts); each sampler is
built by sdwidgets.schedulers from the model's own scheduler config, as the Session does.
Prints one JSON line per sampler (for the study's results folder) and the squares' median fill.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from sdwidgets.schedulers import make_scheduler
from sdwidgets.training import world
from sdwidgets.training.analyse import analyse
from sdwidgets.training.evaluate import eval_prompts, generate, grammar_hits
from sdwidgets.training.workspace import load_asset_pipe


def main() -> None:
    n, guidance, names = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    pipe = load_asset_pipe()
    original = pipe.scheduler
    scenes = eval_prompts(n)
    prompts = [world.caption_of(sc) for sc in scenes]
    for name in names:
        pipe.scheduler = make_scheduler(name, original)
        t = time.time()
        images = generate(pipe, prompts, list(range(n)), guidance_scale=guidance)
        hits = grammar_hits(scenes, images)
        fills = [analyse(im).fill for sc, im in zip(scenes, images) if sc.shape == "square"]
        squares = [h for h, sc in zip(hits["shape"], scenes) if sc.shape == "square"]
        row = {"sampler": name, "n": n, "guidance": guidance, "wall_s": round(time.time() - t),
               **{k: round(float(np.mean(v)), 4) for k, v in hits.items()},
               "squares_right": f"{sum(squares)}/{len(squares)}", "square_median_fill": round(float(np.median(fills)), 3)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
