"""Every model family through the Session, as a user would: tiny models of SD 2.x (v), SDXL, the SDXL
refiner and SD3 built from configs, saved to disk and loaded by path; their LoRAs and ControlNets."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import pixels

import sdwidgets as sdw
from sdwidgets import families
from sdwidgets.errors import ParamError
from sdwidgets.lora import LoraInfo, lora_info

FAMILIES_WITH_TXT2IMG = ["sd2", "sdxl", "sd3"]


@pytest.fixture(scope="session")
def tiny_families(tmp_path_factory) -> dict:
    """name -> folder of each tiny family model, plus ControlNets and LoRAs for them."""
    import tiny_families as tf

    root = tmp_path_factory.mktemp("families")
    models = {"sd2": tf.build_sd2(root), "sdxl": tf.build_sdxl(root), "sdxl-refiner": tf.build_sdxl_refiner(root),
              "sd3": tf.build_sd3(root)}
    return {name: str(folder) for name, folder in models.items()}


@pytest.fixture(scope="session")
def family_extras(tiny_families, tmp_path_factory) -> dict:
    import tiny_families as tf

    root = tmp_path_factory.mktemp("family-extras")
    return {
        "controlnet": {"sdxl": str(tf.build_controlnet(tiny_families["sdxl"], root / "cn-sdxl")),
                       "sd2": str(tf.build_controlnet(tiny_families["sd2"], root / "cn-sd2")),
                       "sd3": str(tf.build_sd3_controlnet(tiny_families["sd3"], root / "cn-sd3"))},
        "lora": {name: tf.build_lora(tiny_families[name], root / f"lora-{name}.safetensors")
                 for name in FAMILIES_WITH_TXT2IMG},
    }


@pytest.fixture
def fsession(tmp_path):
    return sdw.Session(log_dir=tmp_path / "runs", progress=False)


def _img(seed=0, size=64):
    from PIL import Image

    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8"))


# ---- detection ------------------------------------------------------------------------------------

def test_detection_from_component_configs(tiny_families, fsession, tiny_model):
    """Each loaded model's family comes from its configs: SD2 loads as StableDiffusionPipeline like SD1."""
    found = {name: fsession._load(fsession.resolve(folder)).family for name, folder in tiny_families.items()}
    found["sd1"] = fsession._load(fsession.resolve(tiny_model)).family
    assert found == {"sd2": "sd2", "sdxl": "sdxl", "sdxl-refiner": "sdxl-refiner", "sd3": "sd3", "sd1": "sd1"}
    assert type(fsession.pipeline(tiny_families["sd2"])).__name__ == type(fsession.pipeline(tiny_model)).__name__


def test_speed_modes_and_labels():
    assert families.speed_mode("LCM") == "lcm" and families.speed_mode("TCD") == "tcd"
    assert families.speed_mode("Euler", ["lcm-lora-sdv1-5"]) == "lcm"
    assert families.speed_mode("Euler a", model_name="sdxl-turbo") == "turbo"
    assert families.speed_mode("DPM++ 2M", ["ring"], "shapes") is None
    assert families.label("sd1", "lcm") == "sd1+lcm" and families.label("sdxl", None) == "sdxl"


# ---- every family through the Session ---------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES_WITH_TXT2IMG)
def test_family_txt2img_img2img_x0_rerun(name, tiny_families, fsession):
    folder = tiny_families[name]
    run = fsession.generate("a red circle", model=folder, steps=4, seed=3, width=64, height=64)
    assert run.status == "ok" and run.images[0].size == (64, 64)
    # the x0 preview is the predicted clean image, not the noisy latent, from the first step on
    assert pixels(run.frames[0]).tolist() != pixels(run.noisy_frames[0]).tolist()
    img2img = fsession.generate("a red circle", model=folder, steps=4, seed=3, init_image=run.images[0], strength=0.6)
    assert img2img.status == "ok" and "Img2Img" in img2img.pipeline_class
    again = fsession.log.rerun(run.run_id)
    assert np.array_equal(pixels(again.images[0]), pixels(run.images[0]))
    assert fsession.log.df["family"].tolist() == [name] * 3
    assert fsession.loads == 1


def test_sd3_previews_use_their_16_channel_map_and_default_sampler(tiny_families, fsession):
    loaded = fsession._load(fsession.resolve(tiny_families["sd3"]))
    assert len(loaded.latent_rgb.factors) == 16
    with pytest.raises(ParamError, match="does not work with sd3 models.*Flow Euler"):
        fsession.generate("a red circle", model=tiny_families["sd3"], steps=2, scheduler="Euler")
    assert len(fsession.log) == 0


def test_refiner_refines_an_image_only(tiny_families, fsession):
    with pytest.raises(ParamError, match="SDXL refiner.*init_image"):
        fsession.generate("a red circle", model=tiny_families["sdxl-refiner"], steps=2)
    run = fsession.generate("a red circle", model=tiny_families["sdxl-refiner"], steps=4, seed=1, init_image=_img())
    assert run.status == "ok" and fsession.log.df["family"].tolist() == ["sdxl-refiner"]


# ---- family mismatches: clear, before denoising, session unchanged ---------------------------------

def test_sdxl_lora_on_sd1_is_refused_naming_both(family_extras, tiny_session):
    tiny_session.load_lora(family_extras["lora"]["sdxl"], "xl")
    before = tiny_session.generate("a red circle", steps=2, seed=1)
    loaded = next(iter(tiny_session._models.values()))
    with pytest.raises(ParamError, match="'xl' is for sdxl models; this model is sd1"):
        tiny_session.generate("a red circle", steps=2, seed=1, loras={"xl": 1.0})
    assert loaded.loras == set() and len(tiny_session.log) == 1 and tiny_session.loads == 1
    after = tiny_session.generate("a red circle", steps=2, seed=1)
    assert np.array_equal(pixels(after.images[0]), pixels(before.images[0]))


def test_sd1_controlnet_on_sdxl_is_refused_naming_both(tiny_families, tiny_controlnet, fsession):
    fsession.register_controlnet("canny", tiny_controlnet, model=tiny_families["sdxl"])
    with pytest.raises(ParamError, match="is for sd1 models; this model is sdxl"):
        fsession.generate("a red circle", model=tiny_families["sdxl"], steps=2, controls=[sdw.Control("canny", _img())])
    loaded = fsession._models[fsession.resolve(tiny_families["sdxl"]).key]
    assert loaded.controlnets == {} and loaded.variants == {} and len(fsession.log) == 0


def test_lora_family_from_full_size_key_layouts():
    """Names and shapes as in real files: kohya SD1.5 (768-wide), diffusers SDXL (2048), SD3 transformer."""
    sd15 = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)}
    sdxl = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 2048)}
    sd3 = {"transformer.transformer_blocks.0.attn.to_k.lora_A.weight": (4, 1536)}
    assert [families.lora_family(k) for k in (sd15, sdxl, sd3)] == ["sd1", "sdxl", "sd3"]
    families.check_lora("sdxl", 2048, "x", sdxl)
    with pytest.raises(ParamError, match="'x' is for sd3 models; this model is sdxl"):
        families.check_lora("sdxl", 2048, "x", sd3)


# ---- trigger words ----------------------------------------------------------------------------------

def test_bundled_ring_lora_shows_its_trigger_word(session):
    assert session.loras()["ring"].trigger_words == ["sks"]


def test_kohya_tag_frequency_gives_trigger_words(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "kohya.safetensors"
    freq = {"10_ohwx dog": {"ohwx": 20, "dog": 18, "grass": 3}, "5_reg": {"dog": 4}}
    save_file({"x": torch.zeros(1)}, str(path), metadata={"ss_tag_frequency": json.dumps(freq)})
    assert lora_info(path).trigger_words == ["dog", "ohwx", "grass"]
    assert LoraInfo("ours", path, {"sdwidgets.trigger_words": ["sks"]}).trigger_words == ["sks"]


# ---- slow: ControlNet and LoRA strengths per family, TCD/LCM previews ---------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd2", "sdxl", "sd3"])
def test_family_controlnet_changes_the_image(name, tiny_families, family_extras, fsession):
    folder = tiny_families[name]
    fsession.register_controlnet("canny", family_extras["controlnet"][name], model=folder)
    plain = fsession.generate("a red circle", model=folder, steps=4, seed=2, width=64, height=64)
    control = sdw.Control("canny", _img(1), preprocess=False)
    run = fsession.generate("a red circle", model=folder, steps=4, seed=2, width=64, height=64, controls=[control])
    assert "ControlNet" in run.pipeline_class
    assert not np.array_equal(pixels(run.images[0]), pixels(plain.images[0]))
    again = fsession.log.rerun(run.run_id)
    assert np.array_equal(pixels(again.images[0]), pixels(run.images[0]))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd2", "sdxl", "sd3"])
def test_family_lora_strengths(name, tiny_families, family_extras, fsession):
    folder = tiny_families[name]
    fsession.load_lora(family_extras["lora"][name], "fam")
    none, zero, half, full = (pixels(fsession.generate("a red circle", model=folder, steps=4, seed=5, width=64,
                                                       height=64, loras=loras).images[0])
                              for loras in ({}, {"fam": 0.0}, {"fam": 0.5}, {"fam": 1.0}))
    assert np.array_equal(none, zero)
    assert np.abs(half - none).sum() > 0 and np.abs(full - none).sum() > np.abs(half - none).sum()
    assert fsession.loads == 1 and json.loads(fsession.log.df["loras"].iloc[-1]) == {"fam": 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["TCD", "LCM"])
def test_tcd_lcm_previews_are_x0(sampler, tiny_session):
    run = tiny_session.generate("a red circle", steps=4, seed=1, scheduler=sampler, guidance_scale=1.0)
    assert pixels(run.frames[0]).tolist() != pixels(run.noisy_frames[0]).tolist()
    assert tiny_session.log.df["family"].iloc[-1] == f"sd1+{sampler.lower()}"
