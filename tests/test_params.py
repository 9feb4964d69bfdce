"""GenerationParams: validation before model work, serialisation, A1111 infotext."""
import pytest
from PIL import Image

from sdwidgets.errors import ParamError
from sdwidgets.params import GenerationParams, parse_infotext


@pytest.mark.parametrize("kwargs, field, accepted", [
    ({"steps": 0}, "steps", ">= 1"),
    ({"steps": -3}, "steps", ">= 1"),
    ({"steps": 2.5}, "steps", "integer"),
    ({"steps": "20"}, "steps", "integer"),
    ({"width": 500}, "width", "multiple of 8"),
    ({"height": 70}, "height", "multiple of 8"),
    ({"guidance_scale": -1}, "guidance_scale", ">= 0"),
    ({"num_images": 0}, "num_images", ">= 1"),
    ({"seed": 1.5}, "seed", "integer"),
    ({"seed": "abc"}, "seed", "integer"),
    ({"seed": True}, "seed", "integer"),
    ({"scheduler": "Eulr"}, "scheduler", "did you mean 'Euler'?"),
    ({"scheduler": "Nope"}, "scheduler", "DPM++ 2M Karras"),
    ({"guidance_scale": float("nan")}, "guidance_scale", "finite"),
    ({"guidance_scale": float("inf")}, "guidance_scale", "finite"),
    ({"loras": {"ring": float("nan")}}, "loras", "finite"),
    ({"strength": 0.5}, "strength", "init_image"),
    ({"init_image": Image.new("RGB", (8, 8)), "strength": 1.5}, "strength", "[0.0, 1.0]"),
    ({"init_image": "/no/such/image.png"}, "init_image", "no such image"),
    ({"loras": {"ring": "strong"}}, "loras", "number"),
])
def test_bad_input_names_field_and_accepted_values(kwargs, field, accepted):
    with pytest.raises(ParamError) as info:
        GenerationParams(prompt="x", **kwargs)
    assert field in str(info.value) and accepted in str(info.value)


def test_unreadable_init_image_is_rejected(tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(ParamError, match="init_image: cannot read"):
        GenerationParams(prompt="x", init_image=bad)


def test_sampler_names_are_case_insensitive_and_canonicalised():
    assert GenerationParams(prompt="x", scheduler="dpm++ 2m karras").scheduler == "DPM++ 2M Karras"


def test_every_sampler_name_builds_the_scheduler_it_names():
    """Each A1111 name makes a diffusers scheduler that is read back as the same name."""
    import diffusers

    from sdwidgets.schedulers import SAMPLERS, make_scheduler, sampler_name

    noise = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    flow = diffusers.FlowMatchEulerDiscreteScheduler()
    for name, (cls_name, _) in SAMPLERS.items():
        scheduler = make_scheduler(name, flow if cls_name.startswith("FlowMatch") else noise)
        assert type(scheduler).__name__ == cls_name and sampler_name(scheduler) == name, name


def test_defaults_and_img2img_strength_default():
    p = GenerationParams(prompt="x", init_image=Image.new("RGB", (16, 16), "red"))
    assert (p.steps, p.num_images, p.strength, p.task) == (20, 1, 0.75, "img2img")
    assert GenerationParams(prompt="x").task == "txt2img"


def test_infotext_round_trip_in_a1111_format():
    p = GenerationParams(prompt="a red circle,\non a blue background", negative_prompt="green, yellow", seed=42,
                         steps=12, guidance_scale=6.5, width=64, height=64, scheduler="DPM++ 2M Karras",
                         loras={"ring": 0.5})
    text = p.infotext(sampler="DPM++ 2M Karras", width=64, height=64, model_name="shapes", model_hash="abcdef0123456")
    assert text.splitlines()[-2] == "Negative prompt: green, yellow"
    assert "Steps: 12, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 42, Size: 64x64, Model hash: abcdef0123" in text
    back = GenerationParams.from_infotext(text)
    assert back.to_dict() == {**p.to_dict(), "model": "shapes"}


def test_parse_infotext_of_a_real_a1111_string():
    text = ("masterpiece, a cat\nNegative prompt: lowres, bad anatomy\nSteps: 28, Sampler: DPM++ 2M, "
            "Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, "
            'Model: v1-5-pruned-emaonly, Lora hashes: "detail: 2b3c", Version: v1.10.0')
    fields, prompt, negative = parse_infotext(text)
    assert prompt == "masterpiece, a cat" and negative == "lowres, bad anatomy"
    assert fields["Lora hashes"] == "detail: 2b3c" and fields["Version"] == "v1.10.0"
    p = GenerationParams.from_infotext(text)
    assert (p.steps, p.scheduler, p.guidance_scale, p.seed, p.width, p.height) == (28, "DPM++ 2M Karras", 7.0, 1234, 512, 768)
