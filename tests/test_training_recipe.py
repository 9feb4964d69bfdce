"""The embedded model's recipe end to end, on seconds-long budgets: every stage runs, writes a
folder that diffusers loads as a Stable Diffusion pipeline (with its ControlNet and LoRA), scores
it and fills the model card; a second run resumes instead of retraining."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

TINY_BUDGETS = {"SDW_VAE_PROBE_S": "2", "SDW_VAE_S": "3", "SDW_DECODER_S": "2", "SDW_ADAPT_S": "2", "SDW_ADAPT_PAIRS": "32", "SDW_BASE_S": "4", "SDW_RESTART_S": "2", "SDW_RESTART2_S": "2", "SDW_SHARPEN_S": "2", "SDW_SHARPEN2_S": "2", "SDW_POLISH_S": "2",
                "SDW_CONTROLNET_S": "3", "SDW_LORA_S": "3", "SDW_N_TRAIN": "256",
                "SDW_EVAL_N": "6", "SDW_EVAL_SMALL": "3", "SDW_PROBE_N": "2"}


def _recipe(tmp_path, *stage: str) -> str:
    env = os.environ | TINY_BUDGETS | {"SDW_TRAIN_WORK": str(tmp_path / "work"),
                                       "SDW_ASSET_DIR": str(tmp_path / "asset"), "SDW_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sdwidgets.training.shapes", *stage], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    return tmp, _recipe(tmp, "all") + _recipe(tmp, "polish")  # polish: a stage outside "all"


@pytest.mark.slow    # the whole recipe on seconds-long budgets: about 2.5 min
def test_recipe_writes_a_loadable_model_with_controlnet_and_lora(trained):
    from diffusers import ControlNetModel, StableDiffusionPipeline

    tmp, out = trained
    asset = tmp / "asset"
    for stage in ("vae", "base", "restart", "restart2", "sharpen", "sharpen2", "polish", "decoder", "adapt", "export", "controlnet", "lora", "evaluate"):
        assert f"stage {stage}:" in out
    pipe = StableDiffusionPipeline.from_pretrained(str(asset), torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.dtype == torch.float32 and pipe.vae.config.latent_channels == 4
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    ControlNetModel.from_pretrained(asset / "controlnet-canny")
    pipe.load_lora_weights(str(asset / "loras" / "ring.safetensors"), adapter_name="ring")
    assert "ring" in pipe.get_list_adapters()["unet"]
    factors = json.loads((asset / "preview_factors.json").read_text())
    assert len(factors["factors"]) == 4 and len(factors["bias"]) == 3


@pytest.mark.slow    # the whole recipe on seconds-long budgets: about 2.5 min
def test_recipe_records_timings_scores_and_the_model_card(trained):
    tmp, out = trained
    rec = json.loads((tmp / "work" / "timings.json").read_text())
    assert rec["vae"]["factor"] in (4, 8) and rec["base"]["steps"] > 0 and rec["controlnet"]["steps"] > 0
    probe = rec["vae_probe"]  # pixels and shapes read back, per factor; f=8 only if not worse on either
    assert all(0 <= probe[k] <= 1 for k in ("f4", "f8", "f4_shape", "f8_shape"))
    worse = probe["f8"] < probe["f4"] - 0.005 or probe["f8_shape"] < probe["f4_shape"] - 0.02
    assert probe["chosen"] == (4 if worse else 8) == rec["vae"]["factor"]
    assert rec["base"]["loss_curve_every_50"], "the base stage records its loss curve"
    assert rec["restart"]["steps"] > 0 and rec["restart"]["lr"] == 3e-4
    from sdwidgets.training.noise import BASE_NOISE, RESTART2_NOISE, RESTART_NOISE  # the noise each stage trained with

    assert {k: rec["base"][k] for k in BASE_NOISE} == BASE_NOISE
    assert {k: rec["restart"][k] for k in RESTART_NOISE} == RESTART_NOISE
    from sdwidgets.training.denoiser import POSITION_LEARNT

    assert 0 <= rec["restart"]["position_probe"] <= 1
    if rec["restart"]["position_probe"] >= POSITION_LEARNT:  # 2 probe prompts: rarely, by chance
        assert rec["restart2"]["skipped"]
    else:
        assert rec["restart2"]["steps"] > 0 and {k: rec["restart2"][k] for k in RESTART2_NOISE} == RESTART2_NOISE
    for stage in ("sharpen", "sharpen2"):  # two warm restarts with the base's plain noise
        assert rec[stage]["steps"] > 0 and rec[stage]["lr"] == 3e-4 and {k: rec[stage][k] for k in BASE_NOISE} == BASE_NOISE
    assert rec["adapt"]["candidates"] == 32 and 0 <= rec["adapt"]["pairs"] <= 32 and rec["adapt"]["steps"] > 0
    assert rec["polish"]["steps"] > 0 and rec["polish"]["white_below"] == 500 and rec["polish"]["lr"] == 1e-4
    scores = json.loads((tmp / "work" / "eval.json").read_text())
    from sdwidgets.params import GenerationParams  # scored at the guidance users get by default

    assert scores["guidance_scale"] == GenerationParams("a circle").guidance_scale == 5.0
    assert scores["prompts"] == 6 and 0 <= scores["fg"] <= 1 and set(scores["lora_ring_share"]) == {
        "0.0", "0.25", "0.5", "0.75", "1.0"}
    card = (tmp / "asset" / "README.md").read_text()
    assert "fg accuracy (6 prompts)" in card and f"{rec['base']['steps']} steps" in card
    assert "measure" in out and "ok" in out  # the printed table


@pytest.mark.slow    # the whole recipe on seconds-long budgets: about 2.5 min
def test_recipe_resumes_instead_of_retraining(trained):
    tmp, _ = trained
    weights = tmp / "work" / "base" / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights.stat().st_mtime_ns
    out = _recipe(tmp, "base")
    assert "base: exists, skipped" in out and weights.stat().st_mtime_ns == before
    for stage in ("restart", "restart2", "sharpen", "sharpen2", "polish"):  # done too, so they leave the weights alone
        out = _recipe(tmp, stage)
        assert f"{stage}: exists, skipped" in out and weights.stat().st_mtime_ns == before


def test_restart2_gives_its_time_to_sharpen_once_the_probe_says_position_is_learnt(tmp_path, monkeypatch):
    from sdwidgets.training import denoiser, workspace
    from sdwidgets.training.workspace import Budgets

    monkeypatch.setenv("SDW_TRAIN_WORK", str(tmp_path))  # the working folder is read when used
    budgets = Budgets(sharpen_s=5.0, restart2_s=7.0)  # not the defaults: the stages must use what they are given
    (tmp_path / "base").mkdir()
    restart = tmp_path / "base" / "restart.json"
    restart.write_text(json.dumps({"position_probe": denoiser.POSITION_LEARNT - 0.1}))
    assert denoiser.sharpen_seconds(budgets) == 5.0  # restart2 has not been skipped

    restart.write_text(json.dumps({"position_probe": denoiser.POSITION_LEARNT}))
    denoiser.stage_restart2(budgets)  # skips without loading or training anything
    assert json.loads((tmp_path / "base" / "restart2.json").read_text())["skipped"]
    assert workspace.recorded()["restart2"] == {"skipped": True, "position_probe_after_restart": denoiser.POSITION_LEARNT}
    assert denoiser.sharpen_seconds(budgets) == 5.0 + 7.0
    assert denoiser.sharpen_seconds() == Budgets().sharpen_s + Budgets().restart2_s  # the defaults' sum


def test_unknown_stage_is_named_with_the_choices(tmp_path):
    env = os.environ | {"SDW_TRAIN_WORK": str(tmp_path / "work")}
    done = subprocess.run([sys.executable, "-m", "sdwidgets.training.shapes", "unet"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown stage 'unet'" in done.stderr and "controlnet" in done.stderr


def test_model_card_reports_the_from_scratch_run_and_the_default_budget():
    from sdwidgets.training import workspace as ws
    from sdwidgets.training.model_card import render_card

    run = {"date": "2026-11-26", "wall_min": 117.4, "steps": {"base": 1900, "restart": 1500},
           "rows": [["position accuracy (240 prompts)", "41.0%", ">= 85%", False]], "comment": "Position is the gap."}
    card = render_card({"from_scratch": run}, {}, [])
    assert "**From scratch with the default budgets** (2026-11-26, idle CPU): 117 min" in card
    assert "base 1900, restart 1500 steps" in card and "| position accuracy (240 prompts) | 41.0% | >= 85% | **no** |" in card
    default = ws.recipe_training_s() / 60
    assert f"the stages train for {default:.0f} min in all" in card and default <= 112  # + 6.4 min of overhead measured in the third run: under 2 h
    assert "From scratch" not in render_card({}, {}, [])
    # the card lists the stages `all` runs, in order, as the recipe does
    assert "(stages `vae`, `base`, `restart`, `restart2`, `sharpen`, `sharpen2`, `decoder`," in card


def test_roundtrip_shape_accuracy_tells_the_shipped_vae_from_an_untrained_one():
    from diffusers import AutoencoderKL

    from sdwidgets.training.architecture import vae_config
    from sdwidgets.training.codec import roundtrip_shape_accuracy
    from sdwidgets.training.workspace import DEFAULT_ASSET as ASSET

    shipped = AutoencoderKL.from_pretrained(ASSET / "vae", torch_dtype=torch.float32)
    assert roundtrip_shape_accuracy(shipped) >= 0.85  # 0.93 measured
    torch.manual_seed(0)
    assert roundtrip_shape_accuracy(AutoencoderKL(**vae_config(4))) <= 0.4  # 0.14 measured
