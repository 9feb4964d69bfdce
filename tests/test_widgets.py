"""The dashboard and its panels, on real ipywidgets objects and a real pipeline (no browser).

Buttons are pressed with `.click()`, runs happen on the dashboard's worker thread and
`dashboard.wait()` joins it. Few steps everywhere: the CPU is small and shared.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import EMBEDDED_READY
from PIL import Image, ImageDraw

import sdwidgets as sdw
from sdwidgets.widgets import ControlPanel, Dashboard, LivePreview, PromptBuilder
from sdwidgets.widgets.base import blank_png, image_value
from sdwidgets.widgets.builder import compose

STEPS = 4
PNG = b"\x89PNG"


def is_png(value) -> bool:
    """A PNG, and not the blank placeholder an Image starts with."""
    return bytes(value[:4]) == PNG and bytes(value) != blank_png()


@pytest.fixture
def dash(session):
    d = Dashboard(session=session, steps=STEPS)
    yield d
    d.wait(60)
    d.close()


def run_once(d, timeout=60):
    assert d.generate(), d.prompt.status.value
    assert d.wait(timeout), "the run did not finish"
    assert d.last_error is None, d.last_error
    return d.last_run


def shapes_image(size=64, faint=12):
    """A strong-edged square and a faint circle: canny thresholds decide whether the circle shows."""
    img = Image.new("RGB", (size, size), (100, 100, 100))
    draw = ImageDraw.Draw(img)
    draw.rectangle([4, 4, 24, 24], fill=(250, 250, 250))
    draw.ellipse([32, 32, 58, 58], fill=(100 + faint, 100 + faint, 100 + faint))
    return img


# ---- generate, preview, gallery, log ----------------------------------------------------------
def test_generate_click_runs_off_thread_and_fills_every_panel(dash, session):
    dash.prompt.num_images.value = 2
    dash.prompt.seed.value = 7
    before = len(session.log)
    states = []
    original = dash.live.on_step
    dash.live.on_step = lambda rec: (states.append((dash.prompt.generate.disabled, dash.prompt.stop.disabled)),
                                     original(rec))
    dash.prompt.generate.click()
    assert dash.wait(60) and dash.last_error is None, dash.prompt.status.value
    assert states and set(states) == {(True, False)}       # Generate disabled, Stop enabled while it runs
    run = dash.last_run
    assert not dash.prompt.generate.disabled and dash.prompt.stop.disabled
    # live preview received frames as the run went, then the final image
    assert dash.live.steps_seen == len(run.frames) and len(run.frames) >= STEPS     # two images, one batched call
    assert 1 <= dash.live.frames_shown <= dash.live.steps_seen
    assert is_png(dash.live.image.value)
    assert dash.live.progress.value == dash.live.progress.max and dash.live.progress.bar_style == "success"
    assert "steps/s" in dash.live.rate.value
    # gallery: both images, captioned with their seeds
    assert dash.live.gallery.value.count("<img") == 2 and "seed 7" in dash.live.gallery.value and "seed 8" in \
        dash.live.gallery.value
    assert [im.size for im in dash.live.images] == [im.size for im in run.images]
    # the log grew by one row per image, tagged as a dashboard run; the log panel lists it
    assert len(session.log) == before + 2
    df = session.log.df
    assert list(df["source"]) == ["dashboard", "dashboard"] and list(df["seed"]) == [7, 8]
    assert dash.log.select.options[0][1] == run.run_id and "<img" in dash.log.table.value
    # "reuse last" seed
    dash.prompt.random_seed.value = True
    dash.prompt.reuse_seed.click()
    assert dash.prompt.values()["seed"] == 7


def test_step_scrubber_shows_every_step_and_links_play_in_the_browser(dash):
    dash.prompt.scheduler.value = "Euler"       # a sampler that reports its predicted clean image
    run = run_once(dash)
    s = dash.scrubber
    assert s.slider.max == s.play.max == len(run.frames) - 1 and s.slider.value == s.slider.max
    assert s.link.source == (s.play, "value") and s.link.target == (s.slider, "value")   # jslink: browser side
    seen = set()
    for i in range(len(run.frames)):
        s.slider.value = i
        seen.add(s.image.value)
        assert f"step {run.steps[i]}/" in s.info.value and "timestep" in s.info.value
    assert len(seen) > 1
    s.slider.value = 1
    assert bytes(s.image.value) == image_value(run.frames[1])
    s.view.value = "noisy"                       # the toggle: noisy latent instead of predicted clean image
    assert bytes(s.image.value) == image_value(run.noisy_frames[1])


def test_exact_previews_decode_each_step_and_scrub(dash):
    assert [v for _, v in dash.scrubber.view.options] == ["x0", "noisy"]
    dash.live.exact.value = True
    dash.live.min_interval = 0
    shown = []
    original = dash.live.on_step
    dash.live.on_step = lambda rec: (original(rec), shown.append(bytes(dash.live.image.value)))
    run = run_once(dash)
    assert sorted(run.decoded_frames) == run.steps                       # one VAE decode per step
    decoded = {image_value(im) for im in run.decoded_frames.values()}
    assert set(shown[1:]) <= decoded                                     # live: the newest decode
    s = dash.scrubber
    assert "decoded" in [v for _, v in s.view.options]
    s.view.value = "decoded"
    s.slider.value = 1
    assert bytes(s.image.value) == image_value(run.decoded_frames[run.steps[1]])
    last = np.asarray(run.decoded_frames[run.steps[-1]], float)
    assert np.abs(last - np.asarray(run.images[0], float)).mean() < 2      # the last decode is the image


def test_throttle_limits_browser_updates(session):
    d = Dashboard(session=session, steps=8, min_interval=3600)   # nothing but the first and the last step
    try:
        run = run_once(d)
        assert d.live.steps_seen == len(run.frames) >= 8
        assert d.live.frames_shown == 2
    finally:
        d.close()


def test_double_click_makes_one_run(dash, session):
    dash.prompt.generate.click()
    dash.prompt.generate.click()       # Button.click() calls handlers even when disabled: the guard must hold
    assert dash.generate() is False
    dash.wait(60)
    assert dash.runs_started == 1
    assert session.log.df["run_id"].nunique() == 1


def test_stop_interrupts_the_run(dash, session):
    dash.prompt.steps.value = 40
    original = dash.live.on_step

    def slow_step(recorder):                 # a slower model: the main thread surely sees the run going
        original(recorder)
        time.sleep(0.05)

    dash.live.on_step = slow_step
    dash.prompt.generate.click()
    deadline = time.monotonic() + 30
    while dash.live.steps_seen < 2 and dash.running and time.monotonic() < deadline:
        time.sleep(0.005)
    dash.prompt.stop.click()                 # on the main thread, while the worker denoises
    assert dash.wait(60) and dash.last_error is None
    run = dash.last_run
    assert run.status == "interrupted"
    assert len(run.frames) < 20
    assert session.log.df["status"].iloc[-1] == "interrupted"
    assert "interrupted" in dash.prompt.status.value and not dash.prompt.generate.disabled
    dash.live.on_step = original
    dash.prompt.steps.value = STEPS
    assert run_once(dash).status == "ok"      # the next run is unaffected


def test_the_first_run_says_it_loads_the_model(dash, session):
    assert dash.generate()
    said = dash.prompt.status.value, dash.live.rate.value       # set before the worker starts
    assert dash.wait(60) and dash.last_error is None
    assert all("loading model (first run)" in text for text in said), said
    assert dash.generate()
    said = dash.prompt.status.value, dash.live.rate.value
    assert dash.wait(60)
    assert "running" in said[0] and "loading" not in said[1], said


def test_errors_are_a_short_message_and_the_dashboard_stays_usable(dash, session):
    dash.prompt.seed.value = -1               # rejected before any thread starts
    dash.prompt.generate.click()
    assert dash.runs_started == 0 and "seed" in dash.prompt.status.value and not dash.prompt.generate.disabled
    dash.prompt.seed.value = 1
    dash.prompt.model.value = "no-such-model"  # rejected by the Session, on the worker thread
    dash.prompt.generate.click()
    dash.wait(60)
    assert isinstance(dash.last_error, sdw.ParamError)
    assert "model" in dash.prompt.status.value and "Traceback" not in dash.prompt.status.value
    assert len(dash.prompt.status.value) < 600 and not dash.prompt.generate.disabled
    assert len(session.log) == 0
    dash.prompt.model.value = ""
    assert run_once(dash).status == "ok"


# ---- ControlNet -------------------------------------------------------------------------------
def test_controlnet_preview_follows_the_threshold_sliders():
    panel = ControlPanel()
    try:
        row = panel.add_control("canny", shapes_image())
        first, count = row.preview.value, row.preview_count
        assert is_png(first) and is_png(row.thumb.value)
        edges_high = (np.asarray(row.preview_image) > 0).sum()
        row._option_widgets["low_threshold"].value = 5
        row._option_widgets["high_threshold"].value = 20
        assert row.preview_count == count + 2
        assert row.preview.value != first                      # the faint circle's edge appears
        assert (np.asarray(row.preview_image) > 0).sum() > edges_high
        control = panel.controls()[0]
        assert control.kind == "canny" and control.options == {"low_threshold": 5, "high_threshold": 20}
        row.scale.value, row.span.value = 0.6, (0.1, 0.8)
        control = panel.controls()[0]
        assert (control.scale, control.start, control.end) == (0.6, 0.1, 0.8)
        row.enabled.value = False
        assert panel.controls() == []
        panel.add_control("shuffle", shapes_image())
        panel.add_control("canny", shapes_image())
        assert len(panel.controls()) == 2                     # several controls at once
        panel.rows[0].remove.click()
        assert len(panel.rows) == 2
    finally:
        panel.close()


def test_controlnet_image_from_path_variable_and_last_generated(tmp_path):
    path = tmp_path / "in.png"
    shapes_image().save(path)
    last = shapes_image(faint=80)
    panel = ControlPanel(image_source=lambda: last)
    try:
        row = panel.add_control()
        row.path.value = str(path)
        row.load.click()
        assert row.source is not None and row.source.size == (64, 64)
        row.path.value = str(tmp_path / "missing.png")
        row.load.click()
        assert "no such image file" in row.status.value         # a message, the row keeps its image
        row.use_last.click()
        assert row.source.tobytes() == last.tobytes()
    finally:
        panel.close()


def test_controls_from_the_panel_reach_the_run_and_the_log(tiny_session, tiny_controlnet):
    assert "no canny ControlNet" in ControlPanel(session=tiny_session).describe("canny")
    tiny_session.register_controlnet("canny", tiny_controlnet)
    d = Dashboard(session=tiny_session, steps=3)
    try:
        plain = run_once(d)
        row = d.controlnet.add_control("canny")
        assert f"ControlNet: {Path(tiny_controlnet).name}" in row.net.value
        row.use_last.click()                                      # "use this generated image"
        assert row.source.tobytes() == plain.images[0].tobytes()
        row.set_image(shapes_image())
        row._option_widgets["low_threshold"].value = 5
        row._option_widgets["high_threshold"].value = 20
        row.scale.value = 0.8
        controlled = run_once(d)
        (control,) = controlled.params.controls
        assert (control.kind, control.scale, control.options["low_threshold"]) == ("canny", 0.8, 5)
        assert control.preview((64, 64)).tobytes() == row.preview_image.resize((64, 64)).tobytes()
        assert json.loads(tiny_session.log.df["controls"].iloc[-1])[0]["options"]["high_threshold"] == 20
        assert controlled.images[0].tobytes() != plain.images[0].tobytes()
    finally:
        d.close()


@pytest.mark.skipif(not EMBEDDED_READY, reason="the bundled LoRA and ControlNet ship with the embedded model")
def test_bundled_lora_and_controlnet_from_the_panels(session):
    d = Dashboard(session=session, steps=3)
    try:
        assert "ring" in d.lora.available.options
        d.lora.available.value = "ring"
        d.lora.add.click()
        d.lora.rows["ring"].strength.value = 0.8
        row = d.controlnet.add_control("canny", shapes_image())
        assert "ControlNet: controlnet-canny" in row.net.value
        run = run_once(d)
        assert run.params.loras == (("ring", 0.8),) and run.params.controls[0].kind == "canny"
        assert run.status == "ok" and run.images
    finally:
        d.close()


# ---- LoRA -------------------------------------------------------------------------------------
def make_lora(session, folder: Path, name: str = "mine") -> Path:
    """A random LoRA for the session's model, made with peft (as training would)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(session.resolve().location, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, weight_name=f"{name}.safetensors")
    return folder / f"{name}.safetensors"


def test_lora_slider_applies_at_the_next_run_without_reloading(dash, session, tmp_path):
    path = make_lora(session, tmp_path)
    dash.lora.path.value = str(path)
    dash.lora.load.click()
    assert "mine" in dash.lora.rows and "mine" in dash.lora.available.options
    dash.lora.rows["mine"].strength.value = 0.5
    first = run_once(dash)
    assert first.params.loras == (("mine", 0.5),)
    loads = session.loads
    pipe = session.pipeline()
    calls = []
    original = pipe.load_lora_weights
    pipe.load_lora_weights = lambda *a, **k: (calls.append(a), original(*a, **k))[1]
    dash.lora.rows["mine"].strength.value = 2.0           # the slider moves: nothing is loaded
    assert session.loads == loads and calls == []
    second = run_once(dash)
    assert second.params.loras == (("mine", 2.0),)
    assert session.loads == loads and calls == []          # applied at the next run, no reload
    assert json.loads(session.log.df["loras"].iloc[-1]) == {"mine": 2.0}
    assert second.images[0].tobytes() != first.images[0].tobytes()   # same seed, the strength mattered
    # "regenerate on release": releasing the slider re-runs the last parameters with the new strength
    dash.lora.regenerate.value = True
    dash.lora.rows["mine"].strength.value = 0.0
    assert dash.wait(60) and dash.last_run.params.loras == (("mine", 0.0),)
    assert dash.last_run.params.seed == second.params.seed and session.loads == loads and calls == []
    dash.lora.rows["mine"].enabled.value = False         # the on/off toggle regenerates too
    assert dash.lora.loras() == {}
    assert dash.wait(60) and dash.last_run.params.loras == () and session.loads == loads


# ---- log panel, prompt builder ----------------------------------------------------------------
def test_selecting_a_log_row_fills_the_prompt_panel(dash, session):
    a = session.generate("a blue square", negative_prompt="blurry", seed=123, steps=3, guidance_scale=7.5,
                         scheduler="Euler a")
    b = session.generate("a red circle", seed=5, steps=2, guidance_scale=3.0)
    dash.log.refresh()
    assert [o[1] for o in dash.log.select.options] == [b.run_id, a.run_id]   # newest first
    dash.log.select.value = (a.run_id,)
    v = dash.prompt.values()
    assert (v["prompt"], v["negative_prompt"], v["seed"], v["steps"], v["guidance_scale"], v["scheduler"]) == \
        ("a blue square", "blurry", 123, 3, 7.5, "Euler a")
    assert "a blue square" in dash.log.details.value and is_png(dash.log.image.value)
    dash.log.select.value = (a.run_id, b.run_id)
    assert not dash.log.compare.disabled
    dash.log.compare.click()
    assert "sdw-compare" in dash.log.comparison.value and "#fff3b0" in dash.log.comparison.value
    dash.log.select.value = (b.run_id,)
    dash.log.rerun.click()
    dash.wait(60)
    assert dash.last_run.params.seed == 5 and dash.last_run.params.prompt == "a red circle"
    assert session.log.df["source"].iloc[-1] == "dashboard"


def test_prompt_builder_composes_the_prompt_and_logs_its_template(dash, session):
    assert compose({"subject": "a cat", "style": "", "quality": "masterpiece"}) == \
        ("{subject}, {quality}", "a cat, masterpiece")
    b = dash.builder
    b.subject.value = "a red circle"
    b.style.value = "watercolor"
    b.quality.value = ["masterpiece", "sharp focus"]
    assert dash.prompt.prompt.value == "a red circle, watercolor, masterpiece, sharp focus"
    run_once(dash)
    row = session.log.df.iloc[-1]
    assert row["prompt_template"] == "{subject}, {style}, {quality}"
    assert json.loads(row["template_values"]) == {"subject": "a red circle", "style": "watercolor",
                                                  "quality": "masterpiece, sharp focus"}
    dash.prompt.prompt.value = "typed by hand"              # no longer the builder's prompt: no template
    run_once(dash)
    assert pd.isna(session.log.df["prompt_template"].iloc[-1])
    assert PromptBuilder().composed() == ("", "", {})   # an untouched builder composes nothing


# ---- explainer --------------------------------------------------------------------------------
def test_explainer_noises_in_latent_and_pixel_space(session):
    from sdwidgets import explain
    from sdwidgets.widgets.explainer import ExplainerPanel, example_image

    bars = explain.alpha_bars(session)
    assert bars[0] > 0.99 and bars[-1] < 0.05 and np.all(np.diff(bars) < 0)
    image = example_image()
    clean = explain.forward_noise(session, image, 0, seed=1)
    noisy = explain.forward_noise(session, image, len(bars) - 1, seed=1)
    err = lambda im: np.abs(np.asarray(im, float) - np.asarray(image.resize(im.size), float)).mean()  # noqa: E731
    assert err(clean.pixel) < 5 < err(noisy.pixel)
    assert explain.curve_image(bars, 10).size == (256, 160)
    last = [None]
    panel = ExplainerPanel(session, image_source=lambda: last[0])
    try:
        panel.show()
        assert "ᾱ" in panel.status.value and is_png(panel.latent.value)
        before = panel.pixel.value
        panel.t.value = 900
        assert panel.pixel.value != before and panel.last.t == 900
        panel.source.value = "last"                   # nothing generated yet: a message
        assert "no generated image yet" in panel.status.value
        last[0] = shapes_image()
        panel.go.click()
        assert panel.source_image is last[0] and panel.last.t == 900
    finally:
        panel.close()


# ---- lifecycle ----------------------------------------------------------------------------------
def test_default_session_and_close_releases_everything(session):
    from ipywidgets.widgets.widget import _instances  # ipywidgets' registry of open widget models

    from sdwidgets.session import session as default_session

    open_before = len(_instances)
    d = Dashboard()
    d.controlnet.add_control("canny", shapes_image())
    assert d.session is default_session() is session
    mimebundle = d._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in mimebundle
    widgets = [d.prompt.generate, d.live.image, d.scrubber.slider, d.log.select]
    d.close()
    assert all(w.comm is None for w in widgets)
    assert all(not p._observed for p in d.panels)
    assert not d.prompt.generate._click_handlers.callbacks
    assert len(_instances) == open_before          # every model closed: layouts and styles too


def test_live_preview_alone_accepts_a_recorder(session):
    live = LivePreview(min_interval=0)
    run = session.generate("a red circle", seed=1, steps=3, on_step=live.on_step)
    live.finish(run)
    assert live.frames_shown == len(run.frames) and live.gallery.value.count("<img") == 1
    live.close()


# ---- actions on images, img2img, restoring a run -----------------------------------------------
def _png_parameters(data: bytes) -> str:
    import io

    with Image.open(io.BytesIO(data)) as im:
        return im.text["parameters"]


def test_actions_save_the_logged_png_copy_its_parameters_and_send_it_on(dash, session):
    import base64
    import re

    run = run_once(dash)
    bar = dash.actions
    href = re.search(r'href="data:image/png;base64,([^"]+)"', bar.save.value).group(1)
    saved = base64.b64decode(href)
    assert saved == run.image_paths[0].read_bytes()                  # the original file, not a screenshot
    assert _png_parameters(saved) == bar.infotext.value == bar.parameters() != ""
    assert f"Seed: {run.params.seed}" in bar.infotext.value and "navigator.clipboard.writeText" in bar.copy.value
    dash.prompt.seed.value = 999
    bar.reuse_seed.click()
    assert dash.prompt.seed.value == run.params.seed
    bar.to_img2img.click()
    assert dash.tabs.selected_index == 1 and dash.img2img.enabled.value
    dash.img2img.strength.value = 0.5
    second = run_once(dash)                                            # the next Generate uses it
    from sdwidgets.images import image_sha256

    row = session.log.df.iloc[-1]
    assert "Img2Img" in row.pipeline and row.init_image_sha256 == image_sha256(run.image) and second.params.strength == 0.5
    bar.to_control.click()
    assert dash.tabs.selected_index == 2 and len(dash.controlnet.rows) == 1
    assert dash.controlnet.rows[0].source is not None


@pytest.mark.skipif(not EMBEDDED_READY, reason="the bundled LoRA and ControlNet ship with the embedded model")
def test_to_prompt_restores_loras_controls_and_init_so_generate_makes_the_same_pixels(dash, session):
    dash.lora.add_lora("ring", 0.7)
    dash.controlnet.add_control("canny", shapes_image(faint=120))
    dash.img2img.set_image(shapes_image(), 0.6)
    dash.prompt.prompt.value = "a red sks on a blue background"
    dash.prompt.scheduler.value = "Euler a"
    first = run_once(dash)
    dash.lora.set_loras([])                                           # the panels now describe something else
    dash.controlnet.set_controls([])
    dash.img2img.reset()
    dash.prompt.fill(sdw.GenerationParams("a blue square", seed=3))
    dash.log.refresh()
    dash.log.select.value = (first.run_id,)
    dash.log.to_prompt.click()
    assert dash.lora.loras() == {"ring": 0.7} and [c.kind for c in dash.controlnet.controls()] == ["canny"]
    assert dash.img2img.values()["strength"] == 0.6 and dash.prompt.scheduler.value == "Euler a"
    again = run_once(dash)
    assert again.params.loras == first.params.loras and again.params.seed == first.params.seed
    assert np.array_equal(np.asarray(again.image), np.asarray(first.image))
    assert dash.log.actions.run_id == first.run_id and dash.log.actions.save.value   # the log's detail has actions
