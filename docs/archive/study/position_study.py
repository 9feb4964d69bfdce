"""Which recipe change teaches position words from scratch within the CPU budget's step count?

Each variant trains the base from scratch as the recipe does on the CPU, step for step: ``base``
(2,100 steps, cosine from 6e-4) then ``restart`` (1,800 steps from the EMA weights, fresh AdamW,
cosine from 3e-4), the step counts of the 2-hour run of 2026-11-26. The EMA weights are scored
(``recipe_study.score``: 200 grammar prompts, x0 moved by left/right at t=999) at the end of the
base and every 300 steps of the restart. Usage (on the GPU machine, after ``recipe_study.py prep``):

    python study/position_study.py VARIANT --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_study import DEV, build, score  # noqa: E402

from sdwidgets.training import architecture as A  # noqa: E402
from sdwidgets.training import world  # noqa: E402
from sdwidgets.training.shapes import EMA, base_loss  # noqa: E402
from sdwidgets.training.workspace import lr_at, optimise  # noqa: E402

NOW = dict(ch=(48, 96, 128), discount=0.8, share=0.5, floor=0.05, blind=900, lr=(6e-4, 3e-4), steps=(2100, 1800))
VARIANTS = {
    "now": NOW,
    "strong": NOW | dict(discount=0.9, share=0.7),
    "floor3": NOW | dict(floor=0.3),
    "blind7": NOW | dict(blind=700),
    "deep_strong": NOW | dict(ch=(32, 64, 96, 128), discount=0.9, share=0.7),
    "lr_hi": NOW | dict(lr=(1e-3, 6e-4)),
    "mix": NOW | dict(discount=0.9, share=0.7, floor=0.3, blind=700),
}
# Second round: the `mix` base, then a restart with other noise (``then``), to win back shape.
MIX = VARIANTS["mix"]
VARIANTS |= {
    "mix_now": MIX | dict(then=NOW),
    "mix_polish": MIX | dict(then=NOW | dict(share=0.0, white=500)),
    "mix_floor": MIX | dict(then=NOW | dict(floor=0.3)),
}


def main() -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--wall", type=float, default=420, help="training seconds before a final score")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("STUDY_THREADS", 2)))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    v = VARIANTS[a.variant]
    asset = Path(__file__).resolve().parents[1] / "sdwidgets" / "assets" / "shapes"
    tok = CLIPTokenizer.from_pretrained(asset / "tokenizer")
    d = torch.load(a.out / "latents.pt", weights_only=False)
    scenes, lat = [world.Scene(**s) for s in d["scenes"]], d["latents"].to(DEV)
    vae = AutoencoderKL.from_pretrained(asset / "vae", torch_dtype=torch.float32).to(DEV).eval()
    unet, te = (m.to(DEV) for m in build(v, tok))
    sched = A.training_scheduler()
    log = open(a.out / f"pos_{a.variant}.jsonl", "a")
    log.write(json.dumps(dict(variant=a.variant, cfg={k: list(x) if isinstance(x, tuple) else x for k, x in v.items() if k != "then"},
                              then=v.get("then"),
                              unet_params=sum(p.numel() for p in unet.parameters()))) + "\n")
    t0, done = time.time(), 0
    for phase, (lr, steps, warmup) in enumerate(zip(v["lr"], v["steps"], (300, 100))):
        params = list(unet.parameters()) + list(te.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        ema_u, ema_t = EMA(unet), EMA(te)
        marks = {steps} if phase == 0 else set(range(300, steps + 1, 300))
        n = v.get("then", v) if phase else v
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, lr, warmup=warmup)
            optimise(opt, base_loss(unet, te, tok, sched, scenes, lat, step, 64, discount=n["discount"],
                                    high_noise_share=n["share"], snr_floor=n["floor"], blind_from=n["blind"],
                                    white_below=n.get("white", 0)), params)
            ema_u.update(unet, step)
            ema_t.update(te, step)
            out_of_time = time.time() - t0 > a.wall
            if step + 1 in marks or out_of_time:
                live_u, live_t = ({k: x.clone() for k, x in m.state_dict().items()} for m in (unet, te))
                unet.load_state_dict(ema_u.shadow), te.load_state_dict(ema_t.shadow)
                ts = time.time()
                res = score(unet.eval(), te.eval(), tok, vae, int(os.environ.get("STUDY_N_EVAL", 200))) | dict(phase=("base", "restart")[phase], step=step + 1,
                                                                          total=done + step + 1, train_s=round(ts - t0))
                log.write(json.dumps(res) + "\n"), log.flush()
                print(a.variant, json.dumps(res), flush=True)
                t0 += time.time() - ts
                unet.train(), te.train()
                if out_of_time:
                    return
                if phase == 1 or step + 1 < steps:
                    unet.load_state_dict(live_u), te.load_state_dict(live_t)
        # the restart continues from the base's EMA weights (loaded above at the last mark)
        done += steps


if __name__ == "__main__":
    main()
