"""Evaluation (issue 28): prompt sets, scorers stored beside the log, resumable designs run through a
real Session on the embedded model, bootstrap comparisons, plots and the --eval magic."""
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import EMBEDDED_READY
from PIL import Image, ImageFilter

import sdwidgets as sdw
from sdwidgets.errors import ParamError
from sdwidgets.evaluation import ClipScore, PromptSet, adherence, colourfulness, sharpness
from sdwidgets.evaluation.scorers import prompt_targets
from sdwidgets.evaluation.stats import bootstrap_ci, paired_difference

needs_model = pytest.mark.skipif(not EMBEDDED_READY, reason="scored on the embedded model")
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SLOTS = {"size": ["small", "large"], "color": COLOURS, "shape": ["circle", "square", "triangle"],
         "where": ["on the left", "on the right", "at the top", "at the bottom", "in the center"], "bg": COLOURS}
TEMPLATE = "a {size} {color} {shape} {where} on a {bg} background"


def shapes_set(n: int, seed: int = 0, name: str = "shapes") -> PromptSet:
    return PromptSet.from_template(TEMPLATE, SLOTS, n=n, seed=seed, name=name, distinct=[("color", "bg")])


# ----------------------------------------------------------------------------- prompt sets
def test_prompt_set_from_a_template_is_seeded_hashed_and_keeps_slot_values():
    a, b, c = shapes_set(24), shapes_set(24), shapes_set(24, seed=1)
    assert a.prompts == b.prompts and a.hash == b.hash and a.hash != c.hash
    assert len(a) == 24 and all(v["color"] != v["bg"] for v in a.values)
    assert a[0] == TEMPLATE.format(**a.values[0])
    assert a.tags(3) == {"prompt_set": "shapes", "prompt_set_hash": a.hash, "template": TEMPLATE, "values": a.values[3]}
    assert PromptSet(a.prompts, name="other").hash == a.hash      # the hash is of the content, not the name


def test_prompt_set_from_files(tmp_path):
    prompts = ["a red circle on a blue background", "a green square, at the top"]
    (tmp_path / "p.txt").write_text("# comment\n" + "\n\n".join(prompts) + "\n")
    (tmp_path / "p.csv").write_text('prompt,note\n"a red circle on a blue background",x\n"a green square, at the top",y\n')
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": prompts[0]}) + "\n" + json.dumps(prompts[1]) + "\n")
    sets = [PromptSet.from_file(tmp_path / f"p.{ext}") for ext in ("txt", "csv", "jsonl")]
    assert all(list(s) == prompts and s.name == "p" for s in sets)
    assert len({s.hash for s in sets}) == 1


@pytest.mark.parametrize("make, message", [
    (lambda p: PromptSet([]), "no prompts"),
    (lambda p: PromptSet("one string"), "wrap it in a list"),
    (lambda p: PromptSet(["ok", 3]), "prompt 1 must be a non-empty string"),
    (lambda p: PromptSet.from_file(p / "x.py"), "must end in one of"),
    (lambda p: PromptSet.from_file(p / "missing.txt"), "no such file"),
    (lambda p: (p / "b.csv").write_text("text\nhello\n") and PromptSet.from_file(p / "b.csv"), "'prompt' column"),
    (lambda p: (p / "b.jsonl").write_text('{"prompt": 1}\n') and PromptSet.from_file(p / "b.jsonl"), "line 1"),
    (lambda p: PromptSet.from_template("a {colour!r}", {"colour": ["red"]}, n=2), "not a plain"),
    (lambda p: PromptSet.from_template("a {x}", {"x": []}, n=2), "non-empty list"),
    (lambda p: PromptSet.from_template("a {x}", {"x": ["a"]}, n=0), "n must be a positive integer"),
])
def test_bad_prompt_sets_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(ParamError, match=message) as info:
        make(tmp_path)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- scorers
def test_adherence_reads_the_world_exactly():
    from sdwidgets.training import world

    rng = np.random.default_rng(5)
    for _ in range(20):
        scene = world.sample_scene(rng, force_full=True)
        image = Image.fromarray(world.render(scene))
        assert adherence(image, {"prompt": scene.caption()}) == 1.0, scene.caption()
        wrong = scene.caption().replace(f" {scene.fg} ", f" {next(c for c in COLOURS if c not in (scene.fg, scene.bg))} ")
        assert adherence(image, {"prompt": wrong}) < 1.0
    assert prompt_targets("a small red circle at the top on a blue background") == {
        "bg": "blue", "position": "top", "size": "small", "fg": "red", "shape": "circle"}
    assert np.isnan(adherence(image, {"prompt": "a photo of a cat"}))


def test_image_statistics_need_no_weights():
    from sdwidgets.training import world

    image = Image.fromarray(world.render(world.sample_scene(np.random.default_rng(1), force_full=True)))
    assert sharpness(image.filter(ImageFilter.GaussianBlur(2))) < sharpness(image)
    assert colourfulness(Image.new("RGB", (64, 64), (128, 128, 128))) == 0.0 < colourfulness(image)


def test_clip_score_without_weights_says_so_in_one_line(tmp_path):
    with pytest.raises(ParamError, match="nothing is downloaded") as info:
        ClipScore(model=str(tmp_path / "no-clip-here"))([Image.new("RGB", (64, 64))], [{"prompt": "x"}])
    assert "\n" not in str(info.value)


def tiny_clip(folder):
    """A CLIP model with random weights built from configs and saved like a downloaded one (no network)."""
    import torch
    from tiny_model import _tokenizer_files
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    _tokenizer_files(folder / "_tok")
    tokenizer = CLIPTokenizer(str(folder / "_tok" / "vocab.json"), str(folder / "_tok" / "merges.txt"),
                              model_max_length=16, pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16,
                                         intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                                         vocab_size=len(tokenizer), max_position_embeddings=16),
                        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                                           num_attention_heads=2, num_hidden_layers=1), projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_from_local_weights_is_a_batch_scorer_of_the_log(session, tmp_path):
    clip = ClipScore(model=str(tiny_clip(tmp_path / "clip")))
    session.generate("a red circle on a blue background", seed=1, steps=2, num_images=2)
    session.generate("a blue square", seed=1, steps=2)
    column = session.log.score("clip", clip)
    assert len(column) == 3 and column.notna().all() and ((column >= 0) & (column <= 100)).all()
    image = session.log.images(session.log.df["run_id"].iloc[0])[0]
    params = {"prompt": "a red circle on a blue background"}
    assert clip([image, image], [params, params]) == pytest.approx([column.iloc[0]] * 2, abs=1e-4)


def test_bootstrap_intervals():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200)
    mean, low, high = bootstrap_ci(x)
    assert low < mean < high and low < 1.0 < high
    same = paired_difference(x, x, "s", {"a": 1}, {"a": 1})
    assert same.ci_low <= 0 <= same.ci_high and same.within_noise and "within noise" in same.verdict
    noise = paired_difference(x, rng.permutation(x), "s", {"a": 1}, {"a": 2})
    assert noise.ci_low <= 0 <= noise.ci_high           # the same values in another order: no difference
    clear = paired_difference(x + 1, x, "s", {"a": 1}, {"a": 2})
    assert clear.ci_low > 0 and not clear.within_noise


# ----------------------------------------------------------------------------- log.score
def test_a_score_persists_across_sessions_and_is_never_recomputed(session, tmp_path):
    for seed in (1, 2):
        session.generate("a red circle on a blue background", seed=seed, steps=4, num_images=2)
    calls = []

    def mean_red(image, params):
        calls.append(params.seed)
        return float(np.asarray(image)[..., 0].mean())

    column = session.log.score("red", mean_red)
    assert len(calls) == 4 and sorted(calls) == [1, 2, 2, 3]       # each image once, with its own seed
    later = sdw.Session(log_dir=session.log.dir, progress=False)
    df = later.log.df
    assert df["red"].tolist() == pytest.approx(session.log.df["red"].tolist()) and df["red"].notna().all()
    assert column.tolist() == pytest.approx(df["red"].tolist())
    calls.clear()
    later.log.score("red", mean_red)
    assert calls == []
    session.generate("a red circle on a blue background", seed=9, steps=4)
    later.log.score("red", mean_red)
    assert calls == [9]                                            # only the new image
    later.log.score("red", mean_red, recompute=True)
    assert len(calls) == 6
    records = (session.log.dir / "records.jsonl").read_bytes()
    with pytest.raises(ParamError, match="must return a number"):
        later.log.score("bad", lambda im, p: "high")
    with pytest.raises(ParamError, match="a column of the log"):
        later.log.score("seed", mean_red)
    assert (session.log.dir / "records.jsonl").read_bytes() == records


def test_damaged_score_lines_cost_only_themselves(session):
    session.generate("a red circle on a blue background", seed=1, steps=2)
    run_id = session.log.df["run_id"].iloc[0]
    session.log.score("ok", lambda im, p: 0.5)
    path = session.log.dir / "scores.jsonl"
    with open(path, "a") as f:
        f.write('{"run_id": 5, "image_index": 0, "score": "ok", "value": 1}\n')           # wrong type
        f.write(json.dumps({"run_id": run_id, "image_index": 0, "score": "x;import os", "value": 1}) + "\n")
        f.write('{"run_id": "%s", "image_index": 0, "score": "ok", "value": NaN}\n' % run_id)
        f.write(json.dumps({"run_id": run_id, "image_index": 0, "score": "ok", "value": "9"}) + "\n")
        f.write("not json\n")
    with pytest.warns(UserWarning, match="damaged score line") as warned:
        df = sdw.Session(log_dir=session.log.dir, progress=False).log.df
    assert len(warned) == 5 and df["ok"].tolist() == [0.5] and "x;import os" not in df


def test_a_record_with_a_wrong_prompt_set_type_is_skipped(session):
    session.generate("a red circle on a blue background", seed=1, steps=2)
    line = json.loads((session.log.dir / "records.jsonl").read_text().splitlines()[0])
    line.update(run_id="other", prompt_set=7)
    with open(session.log.dir / "records.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    with pytest.warns(UserWarning, match="prompt_set has a wrong type"):
        log = sdw.Session(log_dir=session.log.dir, progress=False).log
    assert len(log) == 1


# ----------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def steps_eval(tmp_path_factory):
    """20 against 2 steps on a 24-prompt set, one seed, on the embedded model (about 20 s here)."""
    if not EMBEDDED_READY:
        pytest.skip("scored on the embedded model")
    s = sdw.Session(log_dir=tmp_path_factory.mktemp("eval") / "runs", progress=False)
    return s, s.evaluate(shapes_set(24), grid={"steps": [2, 20]}, seeds=[0], scorers=["adherence", "sharpness"])


@needs_model
def test_twenty_steps_adhere_better_than_two_on_24_prompts(steps_eval):
    _, ev = steps_eval
    diff = ev.compare({"steps": 20}, {"steps": 2}, score="adherence")
    assert diff.n == 24
    assert diff.ci_low > 0 and not diff.within_noise, diff.verdict     # measured: +0.5, CI [+0.38, +0.62]
    assert "steps=20 scores higher" in diff.verdict
    summary = ev.summary().set_index("steps")
    assert summary.loc[20, "adherence"] > summary.loc[2, "adherence"]
    assert summary.loc[20, "s_per_image"] > summary.loc[2, "s_per_image"]
    assert (summary["adherence_ci_low"] <= summary["adherence"]).all()
    assert (summary["adherence"] <= summary["adherence_ci_high"]).all()


@needs_model
def test_a_configuration_against_itself_is_within_noise(steps_eval):
    _, ev = steps_eval
    for steps in (2, 20):
        same = ev.compare({"steps": steps}, {"steps": steps}, score="adherence")
        assert same.ci_low <= 0 <= same.ci_high and same.within_noise and same.n == 24


@needs_model
def test_the_evaluation_is_tidy_and_in_the_log(steps_eval):
    s, ev = steps_eval
    df = ev.df
    assert len(df) == 48 and set(df["steps"]) == {2, 20} and df["adherence"].notna().all()
    assert (df["prompt_set_hash"] == ev.prompt_set.hash).all()
    log = s.log.df.set_index(["run_id", "image_index"])
    rows = log.loc[list(zip(df["run_id"], df["image_index"]))]
    assert (rows["prompt_set"] == "shapes").all() and (rows["prompt_set_hash"] == ev.prompt_set.hash).all()
    assert (rows["source"] == "evaluate").all() and rows["template_values"].notna().all()
    assert rows["adherence"].tolist() == df["adherence"].tolist()
    with pytest.raises(ParamError, match="not varied here"):
        ev.compare({"cfg": 3}, {"cfg": 5}, score="adherence")
    with pytest.raises(ParamError, match="no rows with"):
        ev.compare({"steps": 7}, {"steps": 2}, score="adherence")
    with pytest.raises(ParamError, match="not in this evaluation"):
        ev.compare({"steps": 20}, {"steps": 2}, score="clip")


@needs_model
def test_plots(steps_eval):
    import matplotlib

    matplotlib.use("Agg")
    _, ev = steps_eval
    fig = ev.plot("steps", "adherence")
    (line,) = [c for c in fig.axes[0].containers]           # one errorbar series, two points
    assert len(line.lines[0].get_xdata()) == 2
    assert ev.frontier("adherence").axes[0].get_xlabel() == "seconds per image"
    grid = ev.best_worst("adherence", k=2, cell=32)
    assert grid.height > 2 * 32 and grid.width > 4 * 32


@needs_model
def test_an_interrupted_evaluation_resumes_without_regenerating(session):
    prompts, grid = shapes_set(4, seed=3), {"steps": [12], "sampler": ["Euler", "DDIM"]}
    result = {}
    worker = threading.Thread(target=lambda: result.update(first=session.evaluate(prompts, grid, seeds=[0, 1],
                                                                                     scorers=["adherence"])))
    worker.start()
    while worker.is_alive():       # stop it after 5 images, with a real Session.interrupt from another thread
        if len(session.log) >= 5:
            session.interrupt()
        time.sleep(0.01)
    first = result["first"]
    assert first.status == "interrupted" and 5 <= len(first) < 16
    logged = len(session.log)
    again = session.evaluate(prompts, grid, seeds=[0, 1], scorers=["adherence"])
    assert again.status == "ok" and len(again) == 16
    assert again.df["reused"].sum() == len(first)
    assert set(first.df["run_id"]) <= set(again.df["run_id"])
    assert len(session.log) == logged + 16 - len(first)
    assert again.df["adherence"].notna().all()
    calls = []
    counted = {"adherence": lambda image, params: calls.append(1) or 1.0}
    fresh = sdw.Session(log_dir=session.log.dir, progress=False)      # a new kernel on the same log
    third = fresh.evaluate(prompts, grid, seeds=[0, 1], scorers=counted)
    assert third.df["reused"].all() and len(fresh.log) == logged + 16 - len(first)
    assert calls == [] and third.df["adherence"].tolist() == again.df["adherence"].tolist()   # stored, not rescored


def test_bad_designs_fail_before_any_model_work(tiny_session):
    s = tiny_session
    for kwargs, message in [({"grid": {"sample_rate": [1]}}, "unknown parameter 'sample_rate'"),
                            ({"grid": {"steps": 20}}, "non-empty list"),
                            ({"grid": {"steps": [0, 20]}}, "steps"),
                            ({"seeds": [-1]}, "seeds must be"),
                            ({"grid": {"steps": [2]}, "steps": 4}, "both fixed and in the grid"),
                            ({"scorers": ["beauty"]}, "unknown scorer 'beauty'")]:
        with pytest.raises(ParamError, match=message):
            s.evaluate(["a red circle"], **kwargs)
    assert s.loads == 0 and len(s.log) == 0


@needs_model
def test_the_log_tab_plots_a_score_against_a_parameter(steps_eval):
    from sdwidgets.widgets.logbrowser import LogPanel

    s, ev = steps_eval
    panel = LogPanel(s)
    try:
        scores = panel.scores
        assert set(scores.score.options) == {"adherence", "sharpness"}
        assert f"shapes ({ev.prompt_set.hash})" in scores.prompt_set.options
        scores.score.value, scores.prompt_set.value = "adherence", f"shapes ({ev.prompt_set.hash})"
        table = scores.table().set_index("steps")
        assert table.loc[20, "adherence"] > table.loc[2, "adherence"] and set(table["n"]) == {24}
        scores.plot.click()
        assert scores.figure.value[:8] == b"\x89PNG\r\n\x1a\n" and scores.status.value == ""
    finally:
        panel.close()


# ----------------------------------------------------------------------------- the magic
@needs_model
def test_eval_magic_runs_a_design_and_keeps_the_result(session):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "sdwidgets")
    ip.user_ns["probe"] = shapes_set(3, seed=9, name="probe")
    try:
        for line, body, message in [("--eval probe", "a red circle", "unknown scorer 'a red circle'"),
                                    ("--eval probe", "# nothing\n", "name the scores in the cell body"),
                                    ("--eval nothing_here", "adherence", "expected a notebook variable"),
                                    ("--eval probe --sweep size=64x64", "adherence", "cannot sweep 'size'"),
                                    ("--eval probe -n 2", "adherence", "sweep seeds instead")]:
            with pytest.raises(UsageError, match=message):
                ip.run_cell_magic("sd", line, body)
        assert len(session.log) == 0
        with capture_output() as shown:
            ip.run_cell_magic("sd", "--eval probe --sweep steps=2,6 --sweep seed=0..1 --cfg 4 --out ev",
                              "adherence  # the prompt adherence of the embedded model\n")
        ev = ip.user_ns["ev"]
        assert isinstance(ev, sdw.Evaluation) and len(ev) == 12 and ev.factors == ["steps"]
        assert set(ev.df["seed"]) == {0, 1} and ev.scores == ["adherence"]
        assert "evaluation on" in shown.outputs[-1].data["text/html"]
        assert (session.log.df["guidance_scale"] == 4).all() and (session.log.df["prompt_set"] == "probe").all()
    finally:
        del ip.user_ns["probe"]
        ip.user_ns.pop("ev", None)


def test_importing_sdwidgets_and_evaluation_stays_light():
    code = ("import sys, sdwidgets as sdw, sdwidgets.evaluation as e; sdw.PromptSet(['a']); e.PromptSet; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.slow
@needs_model
def test_twenty_steps_beat_two_for_two_samplers_and_three_seeds(tmp_path):
    """The heavier version of the required comparison: 24 prompts x 3 seeds x 2 samplers."""
    s = sdw.Session(log_dir=tmp_path / "runs", progress=False)
    ev = s.evaluate(shapes_set(24, seed=11), grid={"sampler": ["Euler", "DPM++ 2M Karras"], "steps": [2, 20]},
                    seeds=[0, 1, 2], scorers=["adherence"])
    for sampler in ("Euler", "DPM++ 2M Karras"):
        diff = ev.compare({"sampler": sampler, "steps": 20}, {"sampler": sampler, "steps": 2}, score="adherence")
        assert diff.n == 72 and diff.ci_low > 0, diff.verdict
