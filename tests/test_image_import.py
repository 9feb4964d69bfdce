"""GenerationParams.from_png on images other tools made, written here the way each tool writes them,
and on damaged files: a one-line ParamError or a ParamWarning, never a PIL or json traceback."""
import datetime
import gzip
import json
import warnings

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdwidgets.errors import ParamError, ParamWarning
from sdwidgets.params import GenerationParams

A1111 = ("a knight, <lora:add_detail:0.5>, masterpiece\nNegative prompt: lowres, blurry\n"
         "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, "
         'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Lora hashes: "add_detail: 7c6bad76eb54", '
         "Version: v1.10.1")


def png(path, size=(64, 64), mode="RGB", **text):
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.new(mode, size, "gray").save(path, pnginfo=info)
    return path


def read(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = GenerationParams.from_png(path)
    return params, [str(w.message) for w in caught if issubclass(w.category, ParamWarning)]


def test_a1111_png_maps_what_it_can_and_names_the_rest(tmp_path):
    p, notes = read(png(tmp_path / "a.png", parameters=A1111))
    # the <lora:...> tag is applied as A1111 would, not sent to the text encoder
    assert (p.prompt, p.negative_prompt, p.loras) == ("a knight, masterpiece", "lowres, blurry", (("add_detail", 0.5),))
    assert (p.steps, p.scheduler, p.guidance_scale, p.seed, p.width, p.height) == \
        (28, "DPM++ 2M Karras", 6.5, 1234, 512, 768)
    assert any("Clip skip" in n and "Lora hashes" in n for n in notes)


def test_odd_a1111_values_give_warnings_with_the_nearest_valid_value(tmp_path):
    text = ('a cat\nSteps: 20, Sampler: Euler a, Schedule type: Exponential, CFG scale: seven, Seed: 5, '
            'Size: 700x525, Model: "C:\\models\\sd15"')
    p, notes = read(png(tmp_path / "odd.png", parameters=text))
    assert (p.width, p.height, p.scheduler, p.seed, p.guidance_scale) == (704, 528, "Euler a", 5, 5.0)
    assert p.model == "C:\\models\\sd15"
    joined = " | ".join(notes)
    assert "width 700 is not a multiple of 8; using 704" in joined and "height 525" in joined
    assert "Schedule type 'Exponential' is not mapped" in joined and "CFG scale: 'seven' does not parse" in joined
    p, notes = read(png(tmp_path / "s.png", parameters="a cat\nSteps: 20, Sampler: Restart, Seed: 1"))
    assert p.scheduler is None and any("Sampler 'Restart' has no equivalent" in n for n in notes)


def a1111_exif(text: str) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")    # as A1111 writes (piexif)
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_exif_user_comment(tmp_path, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (64, 64), "gray").save(path, format=fmt, exif=a1111_exif(A1111))
    p, _ = read(path)
    assert (p.prompt, p.seed, p.steps, p.scheduler, p.width) == \
        ("a knight, masterpiece", 1234, 28, "DPM++ 2M Karras", 512)


def comfyui_graph():
    prompt = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 777, "steps": 25, "cfg": 7.5, "sampler_name": "euler_ancestral",
                                                     "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                     "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 640, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 4, 1, 6, 0, "CLIP"], [3, 4, 1, 7, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
             [5, 7, 0, 3, 2, "CONDITIONING"], [6, 5, 0, 3, 3, "LATENT"], [7, 3, 0, 8, 0, "LATENT"],
             [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]]
    workflow = {"last_node_id": 9, "last_link_id": 9, "nodes": [{"id": int(k), "type": v["class_type"]} for k, v in
                                                                 prompt.items()], "links": links, "version": 0.4}
    return json.dumps(prompt), json.dumps(workflow)


def test_comfyui_prompt_graph(tmp_path):
    prompt, workflow = comfyui_graph()
    p, _ = read(png(tmp_path / "c.png", prompt=prompt, workflow=workflow))
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale, p.scheduler, p.width, p.height) == \
        ("a red fox in the snow", "blurry", 777, 25, 7.5, "Euler a", 512, 640)


def test_invokeai_metadata(tmp_path):
    meta = {"generation_mode": "txt2img", "positive_prompt": "a lighthouse at dusk", "negative_prompt": "text",
            "width": 768, "height": 512, "seed": 4242, "rand_device": "cpu", "cfg_scale": 7, "steps": 30,
            "scheduler": "dpmpp_2m_k", "model": {"model_name": "stable-diffusion-v1-5", "base_model": "sd-1"}}
    p, _ = read(png(tmp_path / "i.png", invokeai_metadata=json.dumps(meta)))
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale, p.scheduler, p.width, p.height) == \
        ("a lighthouse at dusk", "text", 4242, 30, 7.0, "DPM++ 2M Karras", 768, 512)


def test_novelai(tmp_path):
    comment = {"steps": 28, "sampler": "k_euler_ancestral", "seed": 31337, "strength": 0.7, "noise": 0.2,
               "scale": 11.0, "uc": "lowres, bad anatomy", "width": 512, "height": 768}
    p, _ = read(png(tmp_path / "n.png", Software="NovelAI", Source="Stable Diffusion 1D44365E",
                    Title="AI generated image", Description="1girl, blue hair", Comment=json.dumps(comment)))
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale, p.scheduler, p.width, p.height) == \
        ("1girl, blue hair", "lowres, bad anatomy", 31337, 28, 11.0, "Euler a", 512, 768)


FOOOCUS = {"adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion.safetensors",
           "base_model_hash": "aeb7e9e689", "full_negative_prompt": ["low quality"], "full_prompt": ["a castle"],
           "guidance_scale": 4.0, "negative_prompt": "low quality", "performance": "Speed", "prompt": "a castle",
           "prompt_expansion": "a castle, intricate", "refiner_model": "None", "resolution": "(1152, 896)",
           "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras", "seed": "8675309", "sharpness": 2.0, "steps": 30,
           "styles": "['Fooocus V2']", "vae": "Default (model)", "version": "Fooocus v2.5.5"}


def test_fooocus_is_read_as_parameters_not_as_a_prompt_made_of_json(tmp_path):
    p, _ = read(png(tmp_path / "f.png", parameters=json.dumps(FOOOCUS), fooocus_scheme="fooocus"))
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale, p.scheduler, p.width, p.height) == \
        ("a castle", "low quality", 8675309, 30, 4.0, "DPM++ 2M SDE Karras", 1152, 896)
    with pytest.raises(ParamError, match="no generation parameters found"):
        GenerationParams.from_png(png(tmp_path / "j.png", parameters=json.dumps({"some": "other tool"})))


def stealth_png(path, text: str):
    """A1111's "stealth" infotext: gzipped text in the alpha channel's lowest bits, column by column."""
    data = gzip.compress(text.encode())
    bits = "".join(f"{b:08b}" for b in b"stealth_pngcomp") + f"{len(data) * 8:032b}" + \
        "".join(f"{b:08b}" for b in data)
    side = 64
    while side * side < len(bits):
        side *= 2
    im = Image.new("RGBA", (side, side), (128, 128, 128, 254))
    px = im.load()
    for i, bit in enumerate(bits):
        x, y = divmod(i, side)
        r, g, b, a = px[x, y]
        px[x, y] = (r, g, b, (a & ~1) | int(bit))
    im.save(path)
    return path


def test_stealth_png_info(tmp_path):
    p, _ = read(stealth_png(tmp_path / "stealth.png", A1111))
    assert (p.prompt, p.seed, p.steps, p.scheduler) == ("a knight, masterpiece", 1234, 28,
                                                        "DPM++ 2M Karras")


def test_damaged_files_are_one_line_errors(tmp_path, session):
    run = session.generate("a red circle", seed=3, steps=2)
    good = run.image_paths[0].read_bytes()
    cases = {"truncated.png": good[: len(good) // 2], "empty.png": b"", "text.png": b"hello, not an image",
             "header-only.png": good[:40]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    png(tmp_path / "bad-json.png", sdwidgets='{"params": {"prompt": "x", "steps": ')
    png(tmp_path / "bad-params.png", sdwidgets='{"params": {"prompt": 5}}')
    for name in [*cases, "bad-json.png", "bad-params.png", "missing.png"]:
        with pytest.raises(ParamError) as info:
            GenerationParams.from_png(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and name in message, message
    from test_cli_errors import bomb_png
    with pytest.raises(ParamError, match="too large to decode safely"):
        GenerationParams.from_png(bomb_png(tmp_path / "bomb.png"))
    with pytest.raises(ParamError, match="no generation parameters found"):
        GenerationParams.from_png(png(tmp_path / "plain.png"))


def test_sd_import_fills_the_next_sd_cell(session, tmp_path):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sdwidgets")
    text = "a {red} circle on a blue background\nNegative prompt: green\nSteps: 3, Sampler: Euler a, CFG scale: 4, " \
           "Seed: 11, Size: 64x64, Model: somewhere-else, Lora weights: \"ring: 0.5, missing: 1\""
    with capture_output() as out:
        shell.run_line_magic("sd", f"import {png(tmp_path / 'in.png', parameters=text)}")
    cell = shell.rl_next_input
    assert cell.startswith("%%sd --seed 11 --steps 3 --cfg 4 --sampler 'Euler a' --size 64x64 --lora ring:0.5\n")
    assert "is not available here" in out.stdout and "LoRA 'missing'" in out.stdout
    with capture_output():
        shell.run_cell(cell)
    row = session.log.df.iloc[-1]
    assert (row.prompt, row.negative_prompt, row.seed, row.steps, row.scheduler) == \
        ("a {red} circle on a blue background", "green", 11, 3, "Euler a")
    with pytest.raises(UsageError, match="not a readable image"):
        (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
        shell.run_line_magic("sd", f"import {tmp_path / 'broken.png'}")


def test_dashboard_upload_fills_the_prompt_panel(session, tmp_path):
    from sdwidgets.widgets.dashboard import Dashboard

    d = Dashboard(session=session, steps=3)
    try:
        comfy_prompt, workflow = comfyui_graph()
        data = png(tmp_path / "c.png", prompt=comfy_prompt, workflow=workflow).read_bytes()
        d.importer.upload.value = ({"name": "fox.png", "type": "image/png", "size": len(data), "content": memoryview(data),
                                    "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
        p = d.prompt
        assert (p.prompt.value, p.negative_prompt.value, p.seed.value, p.steps.value, p.guidance_scale.value,
                p.scheduler.value, p.width.value, p.height.value) == \
            ("a red fox in the snow", "blurry", 777, 25, 7.5, "Euler a", 512, 640)
        assert p.model.value == "" and "loaded fox.png" in d.importer.status.value
        assert "v1-5-pruned-emaonly.safetensors" in d.importer.status.value and "not carried over" in d.importer.status.value
        d.importer.load("broken.png", b"\x89PNG\r\n\x1a\n broken")
        assert "broken.png" in d.importer.status.value and "not a readable image" in d.importer.status.value
        assert p.prompt.value == "a red fox in the snow"            # a bad file changes nothing
    finally:
        d.close()
