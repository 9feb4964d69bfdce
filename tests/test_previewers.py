"""Preview methods (tiny / approx / full / none): the shipped tiny decoder, the log column, the fallbacks."""
import numpy as np
import pytest
from conftest import EMBEDDED_READY

import sdwidgets as sdw
from sdwidgets.errors import ParamError
from sdwidgets.models import BUILTIN_MODELS

needs_embedded = pytest.mark.skipif(not EMBEDDED_READY, reason="needs the embedded model")


def delta_e(a, b) -> float:
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab = [rgb2lab(np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0) for im in (a, b)]
    return float(deltaE_ciede2000(*lab).mean())


@needs_embedded
def test_shipped_tiny_decoder_loads_through_diffusers_and_is_small():
    import torch
    from diffusers import AutoencoderTiny

    folder = BUILTIN_MODELS["shapes"] / "vae-tiny"
    tiny = AutoencoderTiny.from_pretrained(folder)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
    out = tiny.decode(torch.zeros(1, 4, 16, 16)).sample
    assert out.shape == (1, 3, 64, 64)          # latent factor 4, like the shapes VAE


@needs_embedded
def test_tiny_is_the_default_and_its_last_step_looks_like_the_final_image(session):
    tiny = session.generate("a red circle on a blue background", seed=3, steps=12)
    approx = session.generate("a red circle on a blue background", seed=3, steps=12, preview_method="approx")
    assert (tiny.preview_method, approx.preview_method) == ("tiny", "approx")
    assert list(session.log.df["preview"]) == ["tiny", "approx"]
    assert tiny.frames[-1].size == approx.frames[-1].size == tiny.images[0].size == (64, 64)
    # a broken or untrained decoder is far off (ΔE ~ 30-50); the linear map is about 20 here
    assert delta_e(tiny.frames[-1], tiny.images[0]) < 6
    assert delta_e(approx.frames[-1], approx.images[0]) > 2 * delta_e(tiny.frames[-1], tiny.images[0])


@needs_embedded
def test_session_wide_method_and_the_exact_full_method(tmp_path):
    s = sdw.Session(log_dir=tmp_path, model="shapes", progress=False, preview_method="full", preview_size=32)
    run = s.generate("a green square on a white background", seed=1, steps=4, decode_every=1, preview="x0")
    assert run.preview_method == "full" and s.log.df["preview"].iloc[-1] == "full"
    assert run.frames[-1].size == (32, 32)
    exact = run.decoded_frames[run.steps[-1]].resize((32, 32))
    assert delta_e(run.frames[-1], exact) < 1.0    # the same VAE decode of the same x0


def test_model_without_tiny_weights_falls_back_to_approx_with_one_note(tiny_session):
    with pytest.warns(UserWarning, match=r"no tiny preview decoder .*vae-tiny.*linear map \(approx\)") as caught:
        run = tiny_session.generate("a circle", seed=0, steps=2)
    notes = [str(w.message) for w in caught if "tiny preview decoder" in str(w.message)]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert run.preview_method == "approx" and tiny_session.log.df["preview"].iloc[-1] == "approx"
    width, height = tiny_session.native_size()
    assert run.frames[-1].size == (width, height)   # upscaled from latent size
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")              # said once per loaded model, not every run
        tiny_session.generate("a circle", seed=0, steps=2)


def test_tiny_asked_for_offline_without_weights_is_a_clear_error(tiny_session, tiny_model, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)     # nothing may download in tests
    with pytest.raises(ParamError, match=r"preview_method='tiny': .*" + str(tiny_model) + "/vae-tiny"):
        tiny_session.generate("a circle", seed=0, steps=2, preview_method="tiny")
    assert len(tiny_session.log) == 0


def test_none_method_keeps_no_frames(tiny_session):
    run = tiny_session.generate("a circle", seed=0, steps=2, preview_method="none")
    assert run.frames == [] and run.noisy_frames == [] and tiny_session.log.df["preview"].iloc[-1] == "none"


def test_bad_preview_method_or_size_fails_before_loading(tiny_session):
    with pytest.raises(ParamError, match="preview_method must be one of tiny, approx, full, none"):
        tiny_session.generate("a circle", preview_method="taesd")
    with pytest.raises(ParamError, match="preview_size"):
        tiny_session.generate("a circle", preview_size=0)
    with pytest.raises(ParamError, match="preview_method"):
        sdw.Session(preview_method="fast")
    assert tiny_session.loads == 0 and len(tiny_session.log) == 0
