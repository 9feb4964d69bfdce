"""Recipe study for the bundled ``ring`` LoRA, run on a lent GPU: each variant trains with
:func:`sdwidgets.training.lora.train_lora` for the step count the CPU budget gives, then the ring
share is measured at strengths 0..1 as ``shapes evaluate`` does. Usage:

    python study/lora_study.py VARIANT --out DIR     # JSON line to DIR/lora_VARIANT.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sdwidgets.training import world
from sdwidgets.training.analyse import analyse
from sdwidgets.training.evaluate import generate
from sdwidgets.training.lora import train_lora
from sdwidgets.training.shapes import ring_training_set
from sdwidgets.training.workspace import ASSET, SEED, load_asset_pipe

REF = dict(n=128, rank=8, lr=1e-3, share=0.5, batch=16, steps=700)
VARIANTS = {
    "ref": REF,
    "lr2": REF | dict(lr=2e-3),
    "lr3": REF | dict(lr=3e-3),
    "r16": REF | dict(rank=16),
    "n512": REF | dict(n=512),
    "n512_lr2": REF | dict(n=512, lr=2e-3),
    "share0": REF | dict(share=0.0),
    "b32": REF | dict(batch=32, steps=400),
    "n512_lr3": REF | dict(n=512, lr=3e-3),
    "n512_lr2_r16": REF | dict(n=512, lr=2e-3, rank=16),
    "n1024_lr2": REF | dict(n=1024, lr=2e-3),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-eval", type=int, default=48)
    a = ap.parse_args()
    v = VARIANTS[a.variant]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    images, captions = ring_training_set(v["n"])
    out = Path("/tmp/lora_study") / f"{a.variant}.safetensors"
    t0 = time.time()
    train_lora(images, captions, base_model=ASSET, output=out, rank=v["rank"], steps=v["steps"], lr=v["lr"],
               batch_size=v["batch"], trigger_words=[world.TRIGGER], high_noise_share=v["share"], seed=SEED,
               progress=False, device=dev)
    train_s = time.time() - t0
    pipe = load_asset_pipe().to(dev)
    pipe.load_lora_weights(str(out), adapter_name="ring")
    rng = np.random.default_rng(88)
    pairs = [rng.choice(8, size=2, replace=False) for _ in range(a.n_eval)]
    prompts = [f"a {world.COLOURS[i]} sks on a {world.COLOURS[j]} background" for i, j in pairs]
    shares = {}
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        pipe.set_adapters(["ring"], [w])
        ims = generate(pipe, prompts, list(range(7000, 7000 + a.n_eval)), batch=48, guidance_scale=7.5)
        shares[str(w)] = round(float(np.mean([analyse(im).shape == "ring" for im in ims])), 4)
    res = dict(variant=a.variant, cfg=v, train_s=round(train_s, 1), ring_share=shares)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"lora_{a.variant}.jsonl").write_text(json.dumps(res) + "\n")
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
