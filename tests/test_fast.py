"""The fast path applies and unapplies in place, and LoRA sliders / guidance never recompile.

The compile backend is "eager": dynamo traces and guards exactly as with inductor (recompiles
are decided by guards, not by the backend) without generating code, which this CPU can't afford.
"""
import numpy as np
import pytest
import torch
from conftest import pixels
from torch._dynamo.utils import counters

from sdwidgets.errors import ParamError


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_fast_path_applies_and_unapplies_without_reloading(session, capsys):
    plain = session.generate("a red circle on a blue background", seed=8, steps=3)
    session.set_options(fast=True, compile_backend="eager", progress=True)
    unet = session.pipeline().unet
    assert unet._compiled_call_impl is not None
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    assert next(p for p in unet.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    fast = session.generate("a red circle on a blue background", seed=8, steps=3)
    assert "compiling the denoiser for 64x64 x1 (first run only" in capsys.readouterr().err
    session.generate("a red circle on a blue background", seed=9, steps=3)
    assert "compiling" not in capsys.readouterr().err          # said once per model and shape
    assert np.abs(pixels(fast.image) - pixels(plain.image)).max() <= 2   # fused matmuls: rounding only
    session.set_options(fast=False)
    session.generate("a circle", seed=1, steps=2)
    assert unet._compiled_call_impl is None
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert next(p for p in unet.parameters() if p.dim() == 4).is_contiguous()
    again = session.generate("a red circle on a blue background", seed=8, steps=3)
    assert np.array_equal(pixels(again.image), pixels(plain.image))
    assert session.loads == 1
    with pytest.raises(ParamError, match="compile_backend must be"):
        session.set_options(compile_backend="")


def test_lora_strength_guidance_and_sampler_changes_keep_the_compiled_graph(session):
    session.set_options(fast=True, compile_backend="eager")
    session.generate("a red sks on a blue background", seed=1, steps=3, loras={"ring": 0.3})
    compiled = _graphs()
    assert compiled >= 1
    images = []
    for strength, guidance, sampler in [(0.8, 5.0, None), (1.0, 7.0, None), (0.5, 7.0, "Euler a"), (0.0, 3.0, "Euler")]:
        run = session.generate("a red sks on a blue background", seed=1, steps=3, loras={"ring": strength},
                               guidance_scale=guidance, scheduler=sampler)
        images.append(pixels(run.image))
    assert _graphs() == compiled                     # no recompile for any slider, guidance or sampler
    assert not np.array_equal(images[0], images[1])  # the strengths did change the images
    assert session.loads == 1
