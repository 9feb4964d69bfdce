"""The everyday modes (issue 25) on the embedded model: variation seeds, prompt syntax and long
prompts, inpainting, Hires. fix, {a|b} combinations; through Session.generate and %%sd."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import pixels
from IPython.core.error import UsageError
from PIL import Image, ImageDraw

import sdwidgets as sdw
from sdwidgets.errors import ParamError
from sdwidgets.modes import prompts
from sdwidgets.modes.prompts import TruncatedPromptWarning, parse_a1111
from sdwidgets.training.analyse import analyse

PROMPT = "a red circle on a blue background"
# 16 x 7 = 112 tokens: the last ~37 are past CLIP's 75
LONG_HEAD = ", ".join(["a red circle on a blue background"] * 11)


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def blue(size=64):
    return Image.new("RGB", (size, size), (40, 80, 220))


def centre_mask(size=64, lo=12, hi=51):
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle([lo, lo, hi, hi], fill=255)
    return mask


# ---- validation: before any model work --------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"subseed": 3, "subseed_strength": 1.5}, "subseed_strength must be in [0.0, 1.0]"),
    ({"subseed": 3, "subseed_strength": math.nan}, "subseed_strength must be a finite number"),
    ({"subseed_strength": 0.5}, "subseed_strength needs subseed"),
    ({"subseed": -1}, "subseed must be >= 0"),
    ({"prompt_syntax": "markdown"}, "prompt_syntax must be one of plain, a1111, compel"),
    ({"mask_image": Image.new("L", (64, 64))}, "mask_image needs init_image"),
    ({"mask_blur": 4}, "mask_blur only applies with mask_image"),
    ({"hires_scale": 0.5}, "hires_scale must be in [1.0, 8.0]"),
    ({"hires_scale": 2, "hires_upscaler": "bicubic"}, "hires_upscaler must be one of Lanczos, Latent"),
    ({"hires_steps": 4}, "hires_steps only applies with hires_scale"),
    ({"hires_scale": 2, "hires_strength": math.inf}, "hires_strength must be a finite number"),
    ({"hires_scale": 2, "init_image": Image.new("RGB", (64, 64))}, "hires_scale applies to text-to-image only"),
    ({"hires_scale": 2, "hires_steps": 2, "hires_strength": 0.4}, "the Hires. fix pass would run no step"),
])
def test_bad_mode_fields_fail_before_model_work(session, kwargs, words):
    with pytest.raises(ParamError) as info:
        session.generate(PROMPT, steps=2, **kwargs)
    assert words in str(info.value)
    assert session.loads == 0 and len(session.log) == 0


def test_mode_fields_round_trip_through_a1111_text():
    p = sdw.GenerationParams(PROMPT, seed=5, subseed=9, subseed_strength=0.25, hires_scale=2, hires_steps=6,
                             hires_strength=0.55, hires_upscaler="Latent", prompt_syntax="a1111")
    text = p.infotext(sampler="Euler", width=64, height=64)
    for field in ("Variation seed: 9", "Variation seed strength: 0.25", "Hires upscale: 2", "Hires steps: 6",
                  "Hires upscaler: Latent", "Denoising strength: 0.55"):
        assert field in text
    back = sdw.GenerationParams.from_infotext(text)
    assert (back.subseed, back.subseed_strength, back.hires_scale, back.hires_steps, back.hires_strength,
            back.hires_upscaler, back.prompt_syntax) == (9, 0.25, 2.0, 6, 0.55, "Latent", "a1111")
    assert sdw.GenerationParams.from_dict(p.to_dict()).to_dict() == p.to_dict()


# ---- variation seeds ---------------------------------------------------------------------------

def test_variation_strength_0_is_the_seed_1_the_subseed_between_is_new_and_reruns(session):
    seed_image = session.generate(PROMPT, seed=3, steps=5).image
    subseed_image = session.generate(PROMPT, seed=11, steps=5).image
    at0 = session.generate(PROMPT, seed=3, steps=5, subseed=11, subseed_strength=0.0).image
    at1 = session.generate(PROMPT, seed=3, steps=5, subseed=11, subseed_strength=1.0).image
    half = session.generate(PROMPT, seed=3, steps=5, subseed=11, subseed_strength=0.5)
    assert same(at0, seed_image) and same(at1, subseed_image)
    assert not same(half.image, seed_image) and not same(half.image, subseed_image)
    assert same(session.log.rerun(half.run_id).image, half.image)
    row = session.log.df.iloc[-2]
    assert row["params"]["subseed"] == 11 and row["params"]["subseed_strength"] == 0.5


def test_seed_travel_walks_from_seed_to_seed_as_logged_runs(session, tmp_path):
    travel = session.seed_travel(PROMPT, seeds=[3, 11], frames=3, steps=4)
    assert [r.params.subseed_strength for r in travel.runs] == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 0.0]
    alone = {s: session.generate(PROMPT, seed=s, steps=4).image for s in (3, 11)}
    assert same(travel.images[0], alone[3]) and same(travel.images[-1], alone[11])
    assert travel.filmstrip().size == (4 * 64 + 3 * 2, 64)
    with Image.open(travel.save_gif(tmp_path / "travel.gif")) as gif:
        assert gif.n_frames == 4
    assert [json.loads(t)["travel"]["frame"] for t in session.log.df["tags"][:4]] == [0, 1, 2, 3]
    with pytest.raises(ParamError, match="at least two seeds"):
        session.seed_travel(PROMPT, seeds=[3])


# ---- prompts -----------------------------------------------------------------------------------

def test_parse_a1111_weights():
    assert parse_a1111("a (red:1.3) circle") == [("a ", 1.0), ("red", 1.3), (" circle", 1.0)]
    assert parse_a1111("(red) [blue]") == [("red", pytest.approx(1.1)), (" ", 1.0), ("blue", pytest.approx(1 / 1.1))]
    assert parse_a1111("((red))") == [("red", pytest.approx(1.21))]
    assert parse_a1111("(red:1.0) circle") == [("red circle", 1.0)]
    assert parse_a1111(r"a \(literal\) bracket") == [("a (literal) bracket", 1.0)]
    assert parse_a1111("ratio 16:9") == [("ratio 16:9", 1.0)]


def test_weighting_moves_the_embedding_and_weight_one_is_the_plain_prompt(session):
    pipe = session.pipeline()

    def embed(text, syntax="a1111"):
        return prompts.embeddings(pipe, text, "", syntax)["prompt_embeds"]

    plain = embed("a red circle on a blue background")
    assert torch.equal(embed("a (red:1.0) circle on a blue background"), plain)
    assert torch.equal(embed("a (red)1.0 circle on a blue background", "compel"), plain)
    without = embed("a circle on a blue background")
    distance = [float((embed(f"a (red:{w}) circle on a blue background") - without).norm()) for w in (0.5, 1.0, 1.6)]
    assert distance[0] < distance[1] < distance[2]        # more weight on "red", further from no red at all
    assert embed("a red circle BREAK on a blue background").shape[1] == 2 * plain.shape[1]   # BREAK: a new chunk


def test_a_long_prompt_warns_in_plain_and_its_tail_counts_in_a1111_mode(session):
    one, other = LONG_HEAD + ", green square", LONG_HEAD + ", yellow triangle"
    with pytest.warns(TruncatedPromptWarning, match="dropped: .*green square"):
        cut = session.generate(one, seed=2, steps=4)
    assert any("green square" in w for w in cut.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedPromptWarning)
        assert same(session.generate(other, seed=2, steps=4).image, cut.image)    # plain: the tail is cut
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedPromptWarning)       # long mode cuts nothing, warns nothing
        long_one = session.generate(one, seed=2, steps=4, prompt_syntax="a1111")
        long_other = session.generate(other, seed=2, steps=4, prompt_syntax="a1111")
    assert not same(long_one.image, long_other.image) and not long_one.warnings
    assert session.log.df.iloc[-1]["params"]["prompt_syntax"] == "a1111"
    assert same(session.log.rerun(long_one.run_id).image, long_one.image)


def test_session_prompt_syntax_is_the_default_and_recorded(tmp_path, model):
    s = sdw.Session(log_dir=tmp_path / "runs", model=model, progress=False, prompt_syntax="a1111")
    run = s.generate("a (red:1.2) circle on a blue background", seed=1, steps=3)
    assert run.params.prompt_syntax == "a1111"
    with pytest.raises(ParamError, match="prompt_syntax must be one of"):
        sdw.Session(log_dir=tmp_path / "other", prompt_syntax="A1111!")


# ---- inpainting --------------------------------------------------------------------------------

def test_inpainting_repaints_only_the_mask_follows_the_prompt_and_reruns(session):
    init, mask = blue(), centre_mask()
    run = session.generate("a green square on a blue background", seed=1, steps=8, init_image=init,
                           mask_image=mask, strength=1.0, mask_blur=4)
    assert run.pipeline_class == "StableDiffusionInpaintPipeline" and session.loads == 1
    from PIL import ImageFilter

    outside = np.asarray(mask.filter(ImageFilter.GaussianBlur(4))) == 0
    assert outside.sum() > 500
    diff = np.abs(pixels(run.image) - pixels(init)).max(axis=2)
    assert diff[outside].max() == 0                     # pasted back through the blurred mask
    reading = analyse(run.image)                        # inside: what the prompt asked for
    assert (reading.fg, reading.shape) == ("green", "square")
    row = session.log.df.iloc[-1]
    assert row["params"]["mask_blur"] == 4 and row["params"]["mask_image_sha256"]
    assert (session.log.dir / "inputs" / f"{row['params']['mask_image_sha256']}.png").is_file()
    assert same(session.log.rerun(run.run_id).image, run.image)


def test_only_masked_inpaints_the_crop_and_keeps_the_rest(session):
    init = session.generate(PROMPT, seed=4, steps=4).image
    mask = centre_mask(lo=4, hi=19)
    run = session.generate("a green square on a yellow background", seed=2, steps=4, init_image=init,
                           mask_image=mask, strength=0.9, mask_blur=2, inpaint_padding=4)
    from PIL import ImageFilter

    outside = np.asarray(mask.filter(ImageFilter.GaussianBlur(2))) == 0
    diff = np.abs(pixels(run.image) - pixels(init)).max(axis=2)
    assert diff[outside].max() == 0 and diff[~outside].max() > 0
    assert "Inpaint area: Only masked" in sdw.GenerationParams.from_png(run.image_paths[0]).infotext(
        sampler="Euler", width=64, height=64)


def test_outpainting_extends_the_canvas_and_keeps_the_original(session):
    init = session.generate(PROMPT, seed=4, steps=4).image
    canvas, mask = sdw.outpaint_canvas(init, right=32)
    assert canvas.size == mask.size == (96, 64)
    run = session.generate(PROMPT, seed=3, steps=4, init_image=canvas, mask_image=mask, strength=1.0,
                           width=96, height=64, mask_blur=0)
    assert run.image.size == (96, 64)
    assert same(run.image.crop((0, 0, 64, 64)), init)
    assert not same(run.image.crop((64, 0, 96, 64)), canvas.crop((64, 0, 96, 64)))
    with pytest.raises(ParamError, match="at least one of left"):
        sdw.outpaint_canvas(init)


def test_cli_generates_with_the_mode_options(tmp_path, capsys):
    from sdwidgets.cli import main

    log_dir = str(tmp_path / "cli-runs")
    assert main(["generate", PROMPT, "--seed", "2", "--steps", "4", "--hires", "1.5x", "--hires-steps", "3",
                 "--denoise", "0.5", "--subseed", "7", "--subseed-strength", "0.3", "--log-dir", log_dir]) == 0
    path = capsys.readouterr().out.splitlines()[1].strip()
    assert Image.open(path).size == (96, 96)
    params = sdw.ExperimentLog(log_dir).df.iloc[-1]["params"]
    assert (params["hires_strength"], params["subseed"], params["subseed_strength"]) == (0.5, 7, 0.3)
    assert main(["generate", PROMPT, "--denoise", "0.5", "--log-dir", log_dir]) == 2
    assert "--denoise needs the pass" in capsys.readouterr().err


# ---- Hires. fix --------------------------------------------------------------------------------

@pytest.mark.parametrize("upscaler", ["Lanczos", "Latent"])
def test_hires_fix_makes_the_target_size_logs_both_passes_and_reruns(session, upscaler):
    run = session.generate(PROMPT, seed=6, steps=4, hires_scale=1.5, hires_steps=3, hires_upscaler=upscaler)
    assert run.image.size == (96, 96)
    base = session.generate(PROMPT, seed=6, steps=4).image
    assert not same(run.image.resize((64, 64), Image.LANCZOS), base)     # the second pass ran
    row = session.log.df.iloc[-2]
    assert (row["width"], row["height"]) == (64, 64)
    assert (row["params"]["hires_scale"], row["params"]["hires_steps"], row["params"]["hires_strength"],
            row["params"]["hires_upscaler"]) == (1.5, 3, 0.7, upscaler)
    with Image.open(session.log.dir / row["image_path"]) as png:
        text = png.text["parameters"]
    for field in ("Size: 64x64", "Hires upscale: 1.5", "Hires steps: 3", "Denoising strength: 0.7",
                  f"Hires upscaler: {upscaler}"):
        assert field in text
    assert same(session.log.rerun(run.run_id).image, run.image)
    assert session.loads == 1


# ---- detail pass -------------------------------------------------------------------------------

def test_detail_pass_changes_only_the_detected_region_and_reruns(session):
    from PIL import ImageFilter

    from sdwidgets.modes.detail import shapes_detector

    base = session.generate(PROMPT, seed=2, steps=6)
    (x0, y0, x1, y1), = shapes_detector(base.image)
    run = session.generate(PROMPT, seed=2, steps=6, detail={"detector": "shapes", "strength": 0.9, "blur": 2,
                                                            "prompt": "a green circle on a blue background"})
    box = Image.new("L", base.image.size, 0)
    ImageDraw.Draw(box).rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
    outside = np.asarray(box.filter(ImageFilter.GaussianBlur(2))) == 0
    diff = np.abs(pixels(run.image) - pixels(base.image)).max(axis=2)
    assert outside.sum() > 500 and diff[outside].max() == 0 and diff[~outside].max() > 0
    assert analyse(run.image).fg == "green"                  # the region followed its own prompt
    assert run.params.detail.detector == "shapes"
    assert same(session.log.rerun(run.run_id).image, run.image)
    with Image.open(run.image_paths[0]) as png:
        assert "ADetailer model: shapes" in png.text["parameters"]


def test_detail_pass_with_a_session_detector_and_an_unknown_one(session):
    with pytest.raises(ParamError, match="unknown detector 'faces'"):
        session.generate(PROMPT, seed=1, steps=4, detail={"detector": "faces"})
    with pytest.raises(ParamError, match="detail strength must be in"):
        session.generate(PROMPT, seed=1, steps=2, detail={"strength": 2})
    with pytest.raises(ParamError, match="the detail pass would run no step"):
        session.generate(PROMPT, seed=1, steps=2, detail={"strength": 0.4})
    assert session.loads == 0 and len(session.log) == 0
    session.detectors["corner"] = lambda image: [(0, 0, 24, 24)]
    base = session.generate(PROMPT, seed=1, steps=4).image
    run = session.generate(PROMPT, seed=1, steps=4, detail={"detector": "corner", "strength": 0.8, "blur": 0})
    diff = np.abs(pixels(run.image) - pixels(base)).max(axis=2)
    assert diff[:, 32:].max() == 0 and diff[:24, :24].max() > 0


# ---- the %%sd magic ----------------------------------------------------------------------------

@pytest.fixture
def ip(session):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sdwidgets")
    names = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - names:
        del shell.user_ns[name]


def sd(ip, line, body=PROMPT):
    from IPython.utils.capture import capture_output

    with capture_output():
        assert ip.run_cell_magic("sd", line, body) is None


def test_magic_options_named_like_a1111(ip, session):
    ip.user_ns.update(photo=blue(), hole=centre_mask())
    sd(ip, "--seed 3 --steps 4 --subseed 8 --subseed-strength 0.5 --prompt-syntax a1111",
       "a (red:1.2) circle on a blue background")
    sd(ip, "--seed 3 --steps 4 --hires 1.5x --hires-steps 3 --denoise 0.4")
    sd(ip, "--seed 3 --steps 4 --init photo --mask hole --mask-blur 2 --denoise 0.9 --inpaint-padding 8",
       "a green square on a blue background")
    sd(ip, "--seed 3 --steps 4 --detail shapes --detail-strength 0.5 --detail-prompt 'a green circle'")
    rows = [r["params"] for r in session.log._records]
    assert (rows[0]["subseed"], rows[0]["subseed_strength"], rows[0]["prompt_syntax"]) == (8, 0.5, "a1111")
    assert (rows[1]["hires_scale"], rows[1]["hires_steps"], rows[1]["hires_strength"]) == (1.5, 3, 0.4)
    assert (rows[2]["strength"], rows[2]["mask_blur"], rows[2]["inpaint_padding"]) == (0.9, 2, 8)
    assert rows[2]["mask_image_sha256"] and rows[2]["init_image_sha256"]
    assert rows[3]["detail"] == {"detector": "shapes", "prompt": "a green circle", "negative_prompt": None,
                                 "strength": 0.5, "steps": None, "padding": 8, "blur": 4}
    for line, words in [("--denoise 0.5", "--denoise needs the pass"), ("--hires 0.5x", "--hires"),
                        ("--prompt-syntax fancy", "--prompt-syntax"), ("--mask nowhere --init photo", "--mask"),
                        ("--detail-strength 0.3", "go with --detail"), ("--detail faces", "unknown detector")]:
        with pytest.raises(UsageError, match=words):
            ip.run_cell_magic("sd", line, PROMPT)
    assert len(session.log) == 4


def test_magic_expands_variants_into_a_sweep_each_prompt_logged(ip, session):
    ip.user_ns["shape"] = "circle"
    sd(ip, "--seed 5 --steps 2 -o runs", "a {red|green|yellow} {shape} on a blue background")
    result = ip.user_ns["runs"]
    prompts_run = [r.params.prompt for r in result]
    assert prompts_run == [f"a {c} circle on a blue background" for c in ("red", "green", "yellow")]
    df = session.log.df
    assert list(df["prompt"]) == prompts_run
    assert set(df["prompt_template"]) == {"a {red|green|yellow} {shape} on a blue background"}
    assert [json.loads(t)["sweep"]["prompt"] for t in df["tags"]] == [    # the variant each run took
        f"a {c} {{shape}} on a blue background" for c in ("red", "green", "yellow")]
    assert len({r.params.seed for r in result}) == 1       # a sweep compares prompts, not seeds


# ---- SDXL (a tiny random one built from configs): both text encoders and the pooled embedding --

@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    from tiny_model import build_tiny_sdxl

    return str(build_tiny_sdxl(tmp_path_factory.mktemp("sdxl")))


def test_sdxl_a1111_syntax_long_prompts_and_hires(tiny_sdxl, tmp_path):
    s = sdw.Session(log_dir=tmp_path / "runs", model=tiny_sdxl, progress=False)
    plain = s.generate("a red circle", seed=1, steps=2)
    assert plain.pipeline_class == "StableDiffusionXLPipeline"
    assert same(s.generate("a (red:1.0) circle", seed=1, steps=2, prompt_syntax="a1111").image, plain.image)
    pipe = s.pipeline()
    one, weighted = (prompts.embeddings(pipe, t, "", "a1111") for t in ("a red circle", "a (red:1.5) circle"))
    assert not torch.equal(one["prompt_embeds"], weighted["prompt_embeds"])
    long = prompts.embeddings(pipe, LONG_HEAD + ", green square", "", "a1111")
    assert long["prompt_embeds"].shape[1] == 2 * one["prompt_embeds"].shape[1]     # two 77-token chunks, both encoders
    assert long["pooled_prompt_embeds"].shape == one["pooled_prompt_embeds"].shape
    hires = s.generate("a red circle", seed=1, steps=2, hires_scale=2, hires_steps=2, prompt_syntax="a1111")
    assert hires.image.size == (128, 128) and s.loads == 1


# ---- the dashboard -----------------------------------------------------------------------------

def test_dashboard_modes_panel_runs_hires_variation_and_detail_and_fills_back(session):
    from sdwidgets.widgets.dashboard import Dashboard

    d = Dashboard(session=session, steps=4)
    try:
        m = d.modes
        m.hires.value, m.hires_scale.value, m.hires_steps.value, m.hires_strength.value = True, 1.5, 3, 0.5
        m.variation.value, m.subseed.value, m.subseed_strength.value = True, 9, 0.25
        m.detail.value, m.detail_strength.value = True, 0.5
        m.prompt_syntax.value = "a1111"
        d.prompt.seed.value = 4
        assert d.generate(), d.prompt.status.value
        assert d.wait(60) and d.last_error is None, d.last_error
        run = d.last_run
        assert run.image.size == (96, 96)
        p = run.params
        assert (p.hires_scale, p.hires_steps, p.hires_strength, p.subseed, p.subseed_strength, p.prompt_syntax) == \
            (1.5, 3, 0.5, 9, 0.25, "a1111") and p.detail.strength == 0.5
        for box in (m.hires, m.variation, m.detail):
            box.value = False
        m.prompt_syntax.value = "plain"
        m.fill(p)
        keys = ("hires_scale", "hires_steps", "hires_strength", "hires_upscaler", "subseed", "subseed_strength",
                "prompt_syntax", "detail")
        assert {k: d.params().to_dict()[k] for k in keys} == {k: p.to_dict()[k] for k in keys}
    finally:
        d.wait(60)
        d.close()


def test_dashboard_paints_a_mask_and_inpaints_with_it(session):
    from sdwidgets.widgets.dashboard import Dashboard

    d = Dashboard(session=session, steps=4)
    try:
        canvas = d.inpaint
        canvas.use_last.click()
        assert "no image yet" in canvas.status.value
        assert d.generate() and d.wait(60) and d.last_error is None
        base = d.last_run.image
        canvas.use_last.click()
        assert canvas.scale == 4.0 and (canvas.canvas.width, canvas.canvas.height) == (256, 256)
        canvas.brush.value = 8                                   # image pixels
        canvas.stroke_start(40, 40)                              # canvas pixels (4x): image (10, 10)..(30, 10)
        canvas.stroke_move(120, 40)
        canvas.stroke_end()
        canvas.stroke_move(200, 200)                             # the button is up: paints nothing
        mask = np.asarray(canvas.mask)
        assert mask[10, 10] == 255 and mask[10, 30] == 255 and mask[40, 40] == 0 and mask[30:, :].max() == 0
        canvas.eraser.value = True
        canvas.stroke_start(80, 40)
        canvas.stroke_end()
        assert np.asarray(canvas.mask)[10, 20] == 0 and np.asarray(canvas.mask)[10, 10] == 255
        canvas.eraser.value = False
        canvas.clear.click()
        assert np.asarray(canvas.mask).max() == 0
        canvas.stroke_start(100, 100)
        canvas.stroke_move(160, 160)
        canvas.stroke_end()
        canvas.enabled.value, canvas.strength.value, canvas.mask_blur.value = True, 1.0, 2
        d.prompt.prompt.value = "a green square on a yellow background"
        assert d.generate() and d.wait(60) and d.last_error is None, d.last_error
        run = d.last_run
        assert run.pipeline_class == "StableDiffusionInpaintPipeline"
        from PIL import ImageFilter

        outside = np.asarray(canvas.mask.filter(ImageFilter.GaussianBlur(2))) == 0
        diff = np.abs(pixels(run.image) - pixels(base)).max(axis=2)
        assert diff[outside].max() == 0 and diff[~outside].max() > 0
        assert same(session.log.rerun(run.run_id).image, run.image)
    finally:
        d.wait(60)
        d.close()
