"""The ``lora`` stage: the bundled ``ring`` LoRA (trigger word ``sks``), trained on rendered rings
with the users' :func:`sdwidgets.training.lora.train_lora`."""
from __future__ import annotations

import time

import numpy as np

from . import world
from .workspace import DEFAULT_BUDGETS, SEED, Budgets, asset_dir, log, record, work_dir


# From GPU studies at the CPU budget's 700 steps (docs/archive/study/lora_study.py): 128 rings at lr 1e-3,
# rank 8 gave 60% rings at strength 1; 512 rings at 2e-3 gave 83%, on the restarted base 79%;
# rank 16 on top of that 90%, lr 3e-3 86%. On the polished base with the adapted decoder, rank 16
# at 2e-3 fell to 79% (broken and doubled rings); at 3e-3, 1,170 steps in 270 s, 96%.
RING_LR = 3e-3
RING_IMAGES = 512
RING_RANK = 16


def ring_training_set(n: int = RING_IMAGES, seed: int = SEED + 5):
    """Rings captioned with the trigger: 'a [size] red sks [position] on a blue background'."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, shapes=["ring"], force_full=True) for _ in range(n)]
    return ([Image.fromarray(world.render(s)) for s in scenes],
            [world.caption_of(s, shape_word=world.TRIGGER) for s in scenes])


def stage_lora(budgets: Budgets = DEFAULT_BUDGETS) -> None:
    """Train the bundled ``ring`` LoRA on the shipped folder for ``budgets.lora_s``."""
    out = work_dir() / "ring.safetensors"
    if out.exists():
        log("lora: exists, skipped")
        return
    from .lora import train_lora

    t0 = time.time()
    images, captions = ring_training_set()
    train_lora(images, captions, base_model=asset_dir(), output=out, rank=RING_RANK, steps=2000, lr=RING_LR,
               batch_size=16, trigger_words=[world.TRIGGER], high_noise_share=0.5,
               max_seconds=budgets.lora_s, seed=SEED)
    from .lora import lora_metadata

    meta = lora_metadata(out)
    record("lora", dict(images=len(images), rank=RING_RANK, lr=RING_LR, high_noise_share=0.5, steps=int(meta["steps"]),
                        train_s=float(meta["train_seconds"]), stage_wall_s=round(time.time() - t0)))
