"""Session: real diffusers pipelines, caching, samplers, seeds, interrupts, options."""
import subprocess
import sys

import diffusers
import numpy as np
import pytest
import torch
from conftest import EMBEDDED_READY, pixels
from PIL import Image, ImageDraw

import sdwidgets as sdw
from sdwidgets.errors import ModelNotFoundError, OutOfMemoryError, ParamError, UnsafeModelError
from sdwidgets.models import resolve


def circle_image(size=64):
    im = Image.new("RGB", (size, size), (40, 80, 220))
    ImageDraw.Draw(im).ellipse([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=(220, 40, 40))
    return im


def test_import_is_light():
    # how long it takes is measured by benchmarks/import_time.py, not asserted here
    code = ("import sys; import sdwidgets as s; s.Session; s.GenerationParams; s.Control; s.Run; s.ExperimentLog; "
            "print('torch' in sys.modules, 'diffusers' in sys.modules, 'controlnet_aux' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_same_seed_same_pixels_and_other_seed_differs(session):
    a = session.generate("a red circle on a blue background", seed=3, steps=6)
    b = session.generate("a red circle on a blue background", seed=3, steps=6)
    c = session.generate("a red circle on a blue background", seed=4, steps=6)
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert not np.array_equal(pixels(a.image), pixels(c.image))


def test_equal_to_bare_diffusers_pipeline(session):
    run = session.generate("a green square", negative_prompt="red", seed=7, steps=6, guidance_scale=6.0,
                           scheduler="Euler a")
    pipe = session.pipeline()
    pipe.scheduler = diffusers.EulerAncestralDiscreteScheduler.from_pretrained(session.resolve().location,
                                                                              subfolder="scheduler")
    bare = pipe("a green square", negative_prompt="red", num_inference_steps=6, guidance_scale=6.0,
                generator=torch.Generator("cpu").manual_seed(7)).images[0]
    assert np.array_equal(pixels(bare), pixels(run.image))   # (Euler a draws noise from the generator too)


def test_batch_image_i_is_a_lone_run_with_seed_plus_i(session):
    batch = session.generate("a circle", seed=20, steps=4, num_images=3)
    assert batch.seeds == [20, 21, 22] and len(batch.images) == 3
    alone = session.generate("a circle", seed=22, steps=4)
    # one batched call: batched matrix products may differ from batch-1 ones by a pixel level
    assert np.abs(pixels(batch.images[2]) - pixels(alone.image)).max() <= 1
    assert list(session.log.df.query(f"run_id == '{batch.run_id}'")["seed"]) == [20, 21, 22]
    one_by_one = session.generate("a circle", seed=20, steps=4, num_images=3, batch_size=1)
    assert np.array_equal(pixels(one_by_one.images[2]), pixels(alone.image))


def test_seed_none_is_drawn_and_recorded(session):
    run = session.generate("a circle", steps=3)
    assert isinstance(run.params.seed, int)
    again = session.generate("a circle", steps=3, seed=run.params.seed)
    assert np.array_equal(pixels(run.image), pixels(again.image))


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "Heun", "LMS", "DDIM", "DDPM", "PNDM", "UniPC", "LCM",
                                     "DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE Karras", "DPM++ SDE Karras"])
def test_every_sampler_runs_without_reloading(session, sampler):
    session.generate("a circle", seed=1, steps=2)
    run = session.generate("a circle", seed=1, steps=6, scheduler=sampler)   # PNDM's PRK warm-up needs > 4
    assert session.loads == 1
    assert run.sampler == sampler and run.status == "ok"
    assert session.log.df["scheduler"].iloc[-1] == sampler
    assert len(run.frames) >= 6


def test_samplers_change_the_image_and_the_default_is_restored(session):
    a = session.generate("a circle", seed=1, steps=6)
    b = session.generate("a circle", seed=1, steps=6, scheduler="Euler a")
    c = session.generate("a circle", seed=1, steps=6)
    assert not np.array_equal(pixels(a.image), pixels(b.image))
    assert np.array_equal(pixels(a.image), pixels(c.image))


def test_bad_input_fails_before_model_work_and_leaves_log_unchanged(session, tmp_path):
    session.generate("a circle", seed=1, steps=2)
    before = session.log.path.read_bytes()
    loads = session.loads
    for kwargs, match in [({"steps": 0}, "steps"), ({"width": 60}, "width"), ({"scheduler": "Fast"}, "scheduler"),
                          ({"guidance_scale": -2}, "guidance_scale"), ({"model": str(tmp_path / "nope")}, "model"),
                          ({"loras": {"nope": 1.0}}, "unknown LoRA 'nope'"), ({"seed": "x"}, "seed"),
                          ({"init_image": tmp_path / "missing.png"}, "init_image"),
                          ({"strength": 2.0, "init_image": circle_image()}, "strength"),
                          ({"num_images": 0}, "num_images")]:
        with pytest.raises(ParamError, match=match):
            session.generate("a circle", **kwargs)
    assert session.log.path.read_bytes() == before and session.loads == loads


def test_model_resolution(tmp_path, model):
    if EMBEDDED_READY:
        assert resolve(None) == resolve("shapes") and resolve(None).kind == "builtin"
    else:
        with pytest.raises(ModelNotFoundError, match="sdwidgets.training.shapes"):
            resolve(None)
    with pytest.raises(ModelNotFoundError, match="does-not-exist"):
        resolve(str(tmp_path / "does-not-exist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        resolve(str(tmp_path / "empty"))
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"pickle")
    with pytest.raises(UnsafeModelError, match="arbitrary code"):
        resolve(str(ckpt))
    assert resolve(str(ckpt), allow_unsafe=True).kind == "single_file"
    assert resolve("stabilityai/sd-turbo").kind == "hub"       # recognised only; nothing is downloaded
    sf = tmp_path / "model.safetensors"
    sf.write_bytes(b"")
    assert resolve(str(sf)).kind == "single_file"
    assert resolve(model).kind in ("builtin", "folder")


def test_interrupt_stops_at_next_step_and_is_logged(session):
    def stop_at_two(recorder):
        if len(recorder.steps) == 2:
            session.interrupt()

    run = session.generate("a circle", seed=1, steps=10, on_step=stop_at_two, num_images=2, batch_size=1)
    assert run.status == "interrupted"
    assert len(run.frames) == 3              # the step in progress finishes, then nothing more
    assert len(run.images) == 1              # the second image never started
    assert set(session.log.df["status"]) == {"interrupted"}
    ok = session.generate("a circle", seed=1, steps=3)   # a stale stop request does not leak
    assert ok.status == "ok"


def test_keyboard_interrupt_returns_partial_run(session):
    def ctrl_c(recorder):
        if len(recorder.steps) == 3:
            raise KeyboardInterrupt

    run = session.generate("a circle", seed=1, steps=10, on_step=ctrl_c)
    assert run.status == "interrupted" and len(run.frames) == 3 and run.images == []
    row = session.log.df.iloc[-1]
    assert row["status"] == "interrupted" and row["image_path"] is None


def test_out_of_memory_frees_and_advises_and_session_stays_usable(session):
    def oom(recorder):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemoryError, match="attention_slicing=True") as info:
        session.generate("a circle", seed=1, steps=4, on_step=oom)
    assert 'cpu_offload="model"' in str(info.value) and len(str(info.value)) < 300
    assert session.log.df.iloc[-1]["status"] == "failed"
    assert session.generate("a circle", seed=1, steps=2).status == "ok"


def test_options_apply_twice_harmlessly_without_changing_pixels(session):
    a = session.generate("a circle", seed=5, steps=4)
    session.set_options(attention_slicing=True, vae_slicing=True)
    session.set_options(attention_slicing=True, vae_slicing=True)
    b = session.generate("a circle", seed=5, steps=4)
    session.set_options(vae_tiling=True, channels_last=True)
    assert session.loads == 1
    assert np.abs(pixels(a.image) - pixels(b.image)).max() <= 1
    with pytest.raises(ParamError, match="unknown session option 'turbo'"):
        session.set_options(turbo=True)
    with pytest.raises(ParamError, match="cpu_offload must be one of"):
        session.set_options(cpu_offload="always")


def test_previews_every_step_and_every_k(session):
    run = session.generate("a red circle", seed=2, steps=8, scheduler="Euler")
    assert len(run.frames) == len(run.noisy_frames) == 8 == len(run.timesteps)
    assert run.steps == list(range(1, 9))
    assert run.sigmas[0] > run.sigmas[-2] >= 0
    # predicted-x0 previews are not the noisy latents
    assert not np.array_equal(pixels(run.frames[0]), pixels(run.noisy_frames[0]))
    sparse = session.generate("a red circle", seed=2, steps=8, scheduler="Euler", preview_every=3, decode_every=4)
    assert sparse.steps == [3, 6, 8] and sorted(sparse.decoded_frames) == [4, 8]
    assert sparse.decoded_frames[8].size == sparse.image.size
    assert np.array_equal(pixels(sparse.image), pixels(run.image))   # previews never change the result


def test_img2img_and_controlnet_share_the_loaded_components(tiny_session, tiny_controlnet):
    s = tiny_session
    s.register_controlnet("canny", tiny_controlnet)
    base = s.pipeline()
    t2i = s.generate("a red circle", seed=1, steps=4)
    i2i = s.generate("a red circle", seed=1, steps=4, init_image=circle_image(), strength=0.6)
    cn = s.generate("a red circle", seed=1, steps=4, controls=[sdw.Control("canny", circle_image())])
    assert (i2i.pipeline_class, cn.pipeline_class) == ("StableDiffusionImg2ImgPipeline",
                                                       "StableDiffusionControlNetPipeline")
    loaded = next(iter(s._models.values()))
    for variant in loaded.variants.values():
        assert variant.unet is base.unet and variant.vae is base.vae and variant.text_encoder is base.text_encoder
    assert s.loads == 1
    assert not np.array_equal(pixels(t2i.image), pixels(cn.image))
    row = s.log.df.iloc[-2]
    assert row["init_image_sha256"] and row["strength"] == 0.6


def test_lora_strength_is_a_dial_without_reloads(tiny_session, tiny_lora):
    s = tiny_session
    info = s.load_lora(tiny_lora, "tiny")
    assert info.path == tiny_lora.resolve()
    plain = s.generate("a circle", seed=1, steps=3)
    full = s.generate("a circle", seed=1, steps=3, loras={"tiny": 1.0})
    half = s.generate("a circle", seed=1, steps=3, loras={"tiny": 0.5})
    off = s.generate("a circle", seed=1, steps=3, loras={"tiny": 0.0})
    none = s.generate("a circle", seed=1, steps=3)
    d = lambda r: np.abs(pixels(r.image) - pixels(plain.image)).mean()  # noqa: E731
    assert d(full) > d(half) > 0 and d(off) == 0 and d(none) == 0
    assert s.loads == 1 and next(iter(s._models.values())).loras == {"tiny"}
    assert s.log.df["loras"].iloc[1] == '{"tiny": 1.0}'


def test_unload_then_generate_loads_again(session):
    session.generate("a circle", seed=1, steps=2)
    session.unload()
    assert session.loaded_models == []
    session.generate("a circle", seed=1, steps=2)
    assert session.loads == 2


def test_safety_checker_state_is_logged(session):
    session.generate("a circle", seed=1, steps=2)
    row = session.log.df.iloc[-1]
    assert row["safety_checker"] == False and row["nsfw"] is None  # noqa: E712 (our model ships none)


def test_a_failing_run_is_logged_as_failed_and_reraised(session):
    def boom(recorder):
        raise RuntimeError("listener broke")

    with pytest.raises(RuntimeError, match="listener broke"):
        session.generate("a circle", seed=1, steps=3, on_step=boom)
    row = session.log.df.iloc[-1]
    assert row["status"] == "failed" and "listener broke" in row["error"]


def test_default_session_function_survives_submodule_import(tmp_path):
    import importlib

    importlib.import_module("sdwidgets.session")
    assert callable(sdw.session) and isinstance(sdw.session(), sdw.Session)


def test_interrupt_asked_before_the_run_starts_stops_it_but_a_stale_one_does_not(session):
    import threading

    session.interrupt()                                   # nothing running: ignored
    assert session.generate("a circle", seed=1, steps=4).status == "ok"
    session._run_lock.acquire()                           # a run is queued behind another
    worker = threading.Thread(target=lambda: results.append(session.generate("a circle", seed=1, steps=6)))
    results = []
    worker.start()
    while session._active == 0:
        pass
    session.interrupt()                                   # pressed Stop before it started
    session._run_lock.release()
    worker.join()
    assert results[0].status == "interrupted" and len(results[0].frames) == 1


def test_weights_hash_follows_content_and_is_cached(tiny_model, tmp_path, monkeypatch):
    import shutil

    from sdwidgets.models import weights_hash

    monkeypatch.setenv("SDWIDGETS_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    first = weights_hash(resolve(str(copy)))
    assert first == weights_hash(resolve(tiny_model))          # same content, other folder
    assert (tmp_path / "cache" / "file-hashes.json").is_file()
    unet = next((copy / "unet").glob("*.safetensors"))
    unet.write_bytes(unet.read_bytes() + b"\0")
    assert weights_hash(resolve(str(copy))) != first
