"""sdwidgets.train_lora: trains through peft, saves a file that diffusers' load_lora_weights reads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdwidgets.training import train_lora, world
from sdwidgets.training.lora import DEFAULT_TARGETS, lora_metadata

ASSET = Path(__file__).resolve().parents[1] / "sdwidgets" / "assets" / "shapes"


def _rings(n=4):
    rng = np.random.default_rng(3)
    scenes = [world.sample_scene(rng, shapes=["ring"], force_full=True) for _ in range(n)]
    return [Image.fromarray(world.render(s)) for s in scenes], [f"a {s.fg} sks on a {s.bg} background" for s in scenes]


def _fresh_pipe():
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(str(ASSET), torch_dtype=torch.float32,
                                                safety_checker=None, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


def test_train_lora_saves_a_file_that_load_lora_weights_reads(tmp_path):
    images, captions = _rings()
    out = train_lora(images, captions, output=tmp_path / "mine.safetensors", rank=4, steps=3,
                     batch_size=2, lr=1e-3, progress=False)
    assert out == tmp_path / "mine.safetensors" and out.exists()
    meta = lora_metadata(out)
    assert meta["rank"] == 4 and meta["alpha"] == 4.0 and meta["trigger_words"] == ["sks"]
    assert meta["base_model"] == "shapes" and meta["target_modules"] == list(DEFAULT_TARGETS)
    assert len(meta["loss_curve"]) == 3 and meta["steps"] == 3
    assert len(json.loads(out.with_suffix(".loss.json").read_text())["loss"]) == 3

    pipe = _fresh_pipe()
    pipe.load_lora_weights(str(out), adapter_name="mine")
    n_lora = sum(1 for m in pipe.unet.modules() if "mine" in getattr(m, "lora_A", {}))
    with __import__("safetensors").safe_open(str(out), "pt") as f:
        assert n_lora == len(list(f.keys())) // 2  # every saved layer was loaded (attention, ff, conv)
    # a trained LoRA is not zero: scale it up to see it move the output
    outs = []
    for w in (0.0, 30.0):
        pipe.set_adapters(["mine"], [w])
        outs.append(np.asarray(pipe("a red sks on a blue background", num_inference_steps=4,
                                    generator=torch.Generator().manual_seed(0)).images[0], dtype=float))
    assert np.abs(outs[0] - outs[1]).mean() > 0.5


def test_train_lora_reads_a_folder_with_sidecar_captions(tmp_path):
    images, captions = _rings(3)
    for i, (im, c) in enumerate(zip(images, captions)):
        im.save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(c)
    out = train_lora(tmp_path, None, output=tmp_path / "out" / "f.safetensors", rank=4, steps=1,
                     batch_size=2, high_noise_share=1.0, progress=False)
    meta = lora_metadata(out)
    assert meta["images"] == 3 and meta["high_noise_share"] == 1.0
    assert meta["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # the default device


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_train_lora_asks_for_a_gpu_only_where_there_is_one():
    images, captions = _rings(1)
    with pytest.raises(ValueError, match="device 'cuda'.*no CUDA GPU"):
        train_lora(images, captions, device="cuda")


@pytest.mark.parametrize("kwargs, field", [
    (dict(rank=0), "rank"), (dict(steps=0), "steps"), (dict(lr=0.0), "lr"),
    (dict(output="x.bin"), "output"), (dict(high_noise_share=1.5), "high_noise_share"),
    (dict(device="gpu0"), "device"),
])
def test_train_lora_rejects_bad_arguments_before_any_work(kwargs, field):
    images, captions = _rings(1)
    with pytest.raises(ValueError, match=field):
        train_lora(images, captions, **kwargs)


def test_train_lora_needs_matching_captions():
    images, _ = _rings(2)
    with pytest.raises(ValueError, match="caption"):
        train_lora(images, ["one"], steps=1)
    with pytest.raises(ValueError, match="images"):
        train_lora("/nonexistent/folder", "x", steps=1)
