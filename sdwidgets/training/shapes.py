"""The recipe of the embedded model: ``python -m sdwidgets.training.shapes [stage]``.

Stages (each resumable, skipped when its output exists; ``all`` runs them in order):

    vae         train the world's codec (latent factor 4 or 8 chosen by measured pixel accuracy)
    base        pre-encode the captioned world, train text encoder + UNet jointly
    restart     continue the base from its EMA weights with a fresh optimiser (warm restart)
    restart2    a second warm restart, same noise (position words firm up)
    sharpen     a third warm restart with the base's plain noise (shapes sharpen, squares most)
    sharpen2    a fourth, the same again with a fresh schedule (the squares' corners)
    polish      continue it at a lower rate, weighted toward fine detail (sharper shapes)
    decoder     polish the VAE decoder with the encoder frozen
    adapt       fine-tune that decoder on latents the base generated too (img2img on renders)
    controlnet  train a canny ControlNet with the base frozen
    lora        train the bundled ``ring`` LoRA with :func:`sdwidgets.training.lora.train_lora`
    export      write the diffusers folder to sdwidgets/assets/shapes (fp16 safetensors)
    tiny-decoder  distil the preview decoder vae-tiny from the shipped VAE (:mod:`.tiny_decoder`;
                  not in ``all``: run it after ``all``)
    evaluate    score the shipped folder (table of issue 3; :mod:`.evaluate`)

Working files go to ``training-work/`` (git-ignored, or ``SDW_TRAIN_WORK``); timings to
``training-work/timings.json``. Budgets (seconds) are overridden by ``SDW_<STAGE>_S`` (e.g.
``SDW_BASE_S=2000``; all of them: :class:`.workspace.Budgets`), read when this command starts.

This module is the command: the stage table and :func:`main`. The stages live in
:mod:`.codec` (vae, decoder, adapt), :mod:`.denoiser` (base and its restarts), :mod:`.export`,
:mod:`.controlnet_stage`, :mod:`.ring` (lora) and :mod:`.evaluate`; their losses in
:mod:`.losses`, paths, budgets and the shared training loop in :mod:`.workspace`, the
architecture in :mod:`.architecture`, how training samples are noised in :mod:`.noise`, and the
model card (rewritten by ``export`` and ``evaluate``) in :mod:`.model_card`.
"""
from __future__ import annotations

import os
import sys
import time

import torch

from .codec import stage_adapt, stage_decoder, stage_vae
from .controlnet_stage import stage_controlnet
from .denoiser import stage_base, stage_polish, stage_restart, stage_restart2, stage_sharpen, stage_sharpen2
from .evaluate import stage_evaluate
from .export import stage_export
from .model_card import write_model_card
from .ring import stage_lora
from .tiny_decoder import stage_tiny_decoder
from .workspace import ALL, Budgets, log, work_dir


# Every stage takes the Budgets (one signature, so that main can call any of them).
STAGES: dict = {"vae": stage_vae, "base": stage_base, "restart": stage_restart, "restart2": stage_restart2, "sharpen": stage_sharpen,
                "sharpen2": stage_sharpen2, "polish": stage_polish, "decoder": stage_decoder, "adapt": stage_adapt, "export": stage_export,
                "controlnet": stage_controlnet, "lora": stage_lora, "tiny-decoder": stage_tiny_decoder,
                "evaluate": stage_evaluate}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    which = argv[0] if argv else "all"
    if which in ("-h", "--help"):
        print(__doc__)
        return
    if which != "all" and which not in STAGES:
        raise SystemExit(f"unknown stage {which!r}; choose from all, {', '.join(STAGES)}")
    try:
        budgets = Budgets.from_env()
    except ValueError as e:
        raise SystemExit(str(e)) from None
    torch.set_num_threads(int(os.environ.get("SDW_THREADS", 2)))
    work_dir().mkdir(parents=True, exist_ok=True)
    for name in ALL if which == "all" else [which]:
        t0 = time.time()
        STAGES[name](budgets)
        if name in ("export", "evaluate"):  # the stages that change the shipped folder or its scores
            write_model_card(budgets)
        log(f"stage {name}: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
