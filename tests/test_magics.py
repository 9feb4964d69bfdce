"""%%sd and %sd in a real IPython InteractiveShell, on real pipelines and a real log folder."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import pixels
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image, ImageDraw

import sdwidgets as sdw
from sdwidgets.controlnet import PREPROCESSORS
from sdwidgets.magic_commands import COMMANDS
from sdwidgets.sweep import SweepResult

PROMPT = "a red circle on a blue background"


@pytest.fixture
def ip(session):
    """The real shell with the extension loaded; settings and names a test adds are removed after it."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sdwidgets")
    names = set(shell.user_ns)
    yield shell
    magic = shell.magics_manager.registry.get("SDMagic")
    if magic is not None:
        for name, trait in magic.class_traits(config=True).items():
            magic.set_trait(name, trait.default())
    for name in set(shell.user_ns) - names:
        del shell.user_ns[name]


def magic_of(ip):
    return ip.magics_manager.registry["SDMagic"]


def sd(ip, line="", body=PROMPT):
    """Run one %%sd cell; returns what it displayed. The cell itself must return nothing."""
    with capture_output() as captured:
        assert ip.run_cell_magic("sd", line, body) is None
    return captured


def html_of(output) -> str:
    return output.data.get("text/html", "")


def circle(size=64):
    im = Image.new("RGB", (size, size), (40, 80, 220))
    ImageDraw.Draw(im).ellipse([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=(220, 40, 40))
    return im


class ActingPublisher(CapturingDisplayPublisher):
    """IPython's capturing publisher that does something once, at the first in-place update."""

    def __init__(self, action):
        super().__init__()
        self.action = action

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False):
        super().publish(data, metadata, source, transient=transient, update=update)
        if update and self.action is not None:
            action, self.action = self.action, None
            action()


# ---- loading ---------------------------------------------------------------------------------


def test_load_ext_registers_magics_without_importing_torch(tmp_path):
    code = ("import sys; from IPython.core.interactiveshell import InteractiveShell; "
            "ip = InteractiveShell.instance(); ip.run_line_magic('load_ext', 'sdwidgets'); "
            "ip.run_line_magic('sd', 'help'); ip.run_line_magic('sd', 'config'); "
            "m = ip.magics_manager.magics; print('sd' in m['line'], 'sd' in m['cell'], "
            "'torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split()[-4:] == ["True", "True", "False", "False"]
    assert "%sd rerun" in out.stdout


def test_unload_ext_removes_the_magics(ip):
    ip.run_line_magic("unload_ext", "sdwidgets")
    try:
        assert "sd" not in ip.magics_manager.magics["cell"] and "sd" not in ip.magics_manager.magics["line"]
        assert not any(type(c).__name__ == "SDMagic" for c in ip.configurables)
    finally:
        ip.run_line_magic("load_ext", "sdwidgets")
    assert "sd" in ip.magics_manager.magics["cell"]


# ---- %%sd ----------------------------------------------------------------------------------


def test_cell_generates_shows_the_run_and_logs_it(ip, session):
    shown = sd(ip, "--seed 7 --steps 4")
    df = session.log.df
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.prompt, row.seed, row.steps, row.source, row.status) == (PROMPT, 7, 4, "magic", "ok")
    assert row.prompt_template == PROMPT and row.template_values is None
    # one display handle: a placeholder, in-place preview updates, then the Run replaces it
    ids = {o.transient["display_id"] for o in shown.outputs}
    assert len(ids) == 1
    assert not shown.outputs[0].update and all(o.update for o in shown.outputs[1:])
    previews = [html_of(o) for o in shown.outputs[1:-1]]
    assert previews and all("step" in p and "data:image/png" in p for p in previews)
    final = html_of(shown.outputs[-1])
    assert row.run_id in final and "seed 7" in final and "4 steps" in final and "sdw-run" in final


def test_second_cell_reuses_the_loaded_model(ip, session):
    sd(ip, "--steps 2 --seed 1")
    sd(ip, "--steps 2 --seed 2", "a blue square")
    assert session.loads == 1 and len(session.log) == 2


def test_options_reach_the_run_and_the_log(ip, session):
    sd(ip, '--seed 5 --steps 3 --cfg 2.5 --size 64x64 --sampler "Euler a" -n 2 --negative "blurry, dark" --out r')
    run = ip.user_ns["r"]
    assert isinstance(run, sdw.Run) and len(run.images) == 2 and run.seeds == [5, 6]
    df = session.log.df
    assert list(df["seed"]) == [5, 6] and list(df["run_id"]) == [run.run_id] * 2
    row = df.iloc[0]
    assert (row.steps, row.guidance_scale, row.scheduler, row.width, row.height, row.negative_prompt) == \
        (3, 2.5, "Euler a", 64, 64, "blurry, dark")
    # what the magic made is what the core makes with the same parameters
    direct = session.generate(PROMPT, seed=6, steps=3, guidance_scale=2.5, scheduler="Euler a",
                              negative_prompt="blurry, dark")
    assert np.array_equal(pixels(direct.image), pixels(run.images[1]))


def test_model_option_and_model_command(ip, session, tiny_model):
    sd(ip, f"--model {tiny_model} --steps 2 --seed 1")
    assert session.log.df["model"].iloc[-1] == Path(tiny_model).name
    assert Path(tiny_model).name in session.loaded_models
    with capture_output() as out:
        ip.run_line_magic("sd", f"model {tiny_model}")
    assert session.default_model == tiny_model and f"default model: {Path(tiny_model).name}" in out.stdout
    with pytest.raises(UsageError, match="model: 'no/such/model!'"):
        ip.run_line_magic("sd", "model no/such/model!")
    assert session.default_model == tiny_model


def test_interpolation_in_body_and_options_and_negative_prompt_line(ip, session):
    ip.user_ns.update(color="green", shape="square", bad="blurry", n_steps=3, s=11)
    body = "a {color} {shape} on {{curly}} ground\nNegative prompt: {bad}, dark"
    sd(ip, "--steps {n_steps} --seed {s}", body)
    row = session.log.df.iloc[-1]
    assert row.prompt == "a green square on {curly} ground"
    assert row.negative_prompt == "blurry, dark"
    assert (row.steps, row.seed) == (3, 11)
    assert row.prompt_template == body
    assert json.loads(row.template_values) == {"color": "green", "shape": "square", "bad": "blurry"}


def test_pasted_a1111_parameters_are_used_and_options_override_them(ip, session):
    body = ("a red circle, (blue background:1.2)\nNegative prompt: blurry\n"
            "Steps: 9, Sampler: DDIM, CFG scale: 4, Seed: 42, Size: 64x64, Model hash: abc, Model: other")
    with capture_output() as out:
        ip.run_cell_magic("sd", "--steps 2", body)
    row = session.log.df.iloc[-1]
    assert (row.prompt, row.negative_prompt) == ("a red circle, (blue background:1.2)", "blurry")
    assert (row.steps, row.scheduler, row.guidance_scale, row.seed) == (2, "DDIM", 4.0, 42)
    assert "from the pasted parameters line" in out.stdout


def test_one_sweep_makes_a_labelled_row_with_one_shared_seed(ip, session):
    shown = sd(ip, "--steps 2 --sweep cfg=3,5,7 --out sw")
    sweep = ip.user_ns["sw"]
    assert isinstance(sweep, SweepResult) and isinstance(sweep, list) and len(sweep) == 3
    df = session.log.df
    assert len(df) == 3 == sum(len(r.images) for r in sweep)
    assert list(df["guidance_scale"]) == [3.0, 5.0, 7.0] and df["seed"].nunique() == 1
    assert list(df["run_id"]) == [r.run_id for r in sweep]
    final = html_of(shown.outputs[-1])
    for label in ("cfg = 3", "cfg = 5", "cfg = 7", f"seed {sweep[0].params.seed}", "sweep cfg: 3 runs"):
        assert label in final
    assert final.count("<tr>") == 2        # header + one row


def test_two_sweeps_make_a_grid_and_every_image_is_logged(ip, session):
    shown = sd(ip, '--steps 2 -n 2 --sweep seed=1..2 --sweep sampler="Euler a","DDIM" --out grid')
    grid = ip.user_ns["grid"]
    assert grid.shape == (2, 2) and len(grid) == 4
    df = session.log.df
    assert len(df) == 8 == sum(len(r.images) for r in grid)
    assert [(r.params.seed, r.sampler) for r in grid] == [(1, "Euler a"), (2, "Euler a"), (1, "DDIM"), (2, "DDIM")]
    assert sorted(df["seed"]) == [1, 1, 2, 2, 2, 2, 3, 3]
    final = html_of(shown.outputs[-1])
    assert final.count("<tr>") == 3
    for label in ("sampler ↓ · seed →", "seed = 1", "seed = 2", "sampler = Euler a", "sampler = DDIM", "seed 2 · "):
        assert label in final
    picture = grid.grid()                   # the labelled grid as one image
    assert picture.width > 2 * 2 * 64 and picture.height > 2 * 64


def test_sweep_over_a_prompt_variable_and_rerun_with_another_value(ip, session):
    sd(ip, "--steps 2 --seed 3 --sweep color=red,blue", "a {color} circle")
    df = session.log.df
    assert list(df["prompt"]) == ["a red circle", "a blue circle"]
    assert [json.loads(v) for v in df["template_values"]] == [{"color": "red"}, {"color": "blue"}]
    with capture_output():
        ip.run_line_magic("sd", f"rerun {df.run_id.iloc[0]} color=green")
    row = session.log.df.iloc[-1]
    assert (row.prompt, row.seed, row.source, json.loads(row.template_values)) == \
        ("a green circle", 3, "rerun", {"color": "green"})


def test_lora_load_list_and_use(ip, session, tiny_model, tiny_lora):
    with capture_output() as out:
        ip.run_line_magic("sd", f"lora load {tiny_lora} mine")
    assert "'mine'" in out.stdout
    table = ip.run_line_magic("sd", "loras")
    assert "mine" in table.index
    sd(ip, f"--model {tiny_model} --steps 2 --seed 1 --lora mine:0.8 --out with")
    sd(ip, f"--model {tiny_model} --steps 2 --seed 1 --out without")
    assert json.loads(session.log.df["loras"].iloc[0]) == {"mine": 0.8}
    assert not np.array_equal(pixels(ip.user_ns["with"].image), pixels(ip.user_ns["without"].image))


def test_control_from_a_variable_and_from_a_path(ip, session, tiny_model, tiny_controlnet, tmp_path):
    session.register_controlnet("canny", tiny_controlnet, model=tiny_model)
    edges = Image.new("RGB", (64, 64))
    ImageDraw.Draw(edges).rectangle([16, 16, 48, 48], outline=(255, 255, 255))
    edges.save(tmp_path / "edges.png")
    ip.user_ns["edges"] = edges
    sd(ip, f"--model {tiny_model} --steps 2 --seed 1 --control canny:edges:0.5")
    row = session.log.df.iloc[-1]
    assert "ControlNet" in row.pipeline
    control = json.loads(row.controls)[0]
    assert (control["kind"], control["scale"]) == ("canny", 0.5)
    plan = magic_of(ip).plan(f"--control canny:{tmp_path / 'edges.png'}", PROMPT)      # a path, default scale
    (c,) = plan.params[0].controls
    assert (c.kind, c.scale, c.image.size) == ("canny", 1.0, (64, 64))


def test_init_image_and_strength(ip, session):
    ip.user_ns["photo"] = circle()
    sd(ip, "--init photo --strength 0.5 --steps 4 --seed 1")
    row = session.log.df.iloc[-1]
    assert row.strength == 0.5 and row.init_image_sha256 and "Img2Img" in row.pipeline


def test_init_from_the_last_run_a_run_id_or_a_kept_run(ip, session):
    from sdwidgets.images import image_sha256

    sd(ip, "--steps 3 --seed 7 --out first")
    first = ip.user_ns["first"]
    sd(ip, "--steps 3 --seed 8")
    second = session.log.df.iloc[-1]
    sd(ip, "--init last --strength 0.5 --steps 4 --seed 1")          # the run just before
    assert session.log.df.iloc[-1].init_image_sha256 == image_sha256(session.log.images(second.run_id)[0])
    sd(ip, f"--init {first.run_id[-6:]} --strength 0.5 --steps 4 --seed 1")   # a unique part of a run id
    sd(ip, "--init first --strength 0.5 --steps 4 --seed 1")         # the Run kept with --out
    rows = session.log.df.iloc[-2:]
    assert list(rows.init_image_sha256) == [image_sha256(first.image)] * 2
    with pytest.raises(UsageError, match="--init: 'nothing_here' is neither a variable"):
        ip.run_cell_magic("sd", "--init nothing_here --steps 2", PROMPT)


# ---- live preview and interrupts --------------------------------------------------------------


def test_preview_updates_in_place_every_k_steps_and_is_throttled(ip, session):
    magic = magic_of(ip)
    magic.preview_interval = 0.0
    shown = sd(ip, "--steps 4 --every 2 --out r")
    run = ip.user_ns["r"]
    assert run.steps and all(s % 2 == 0 or s == run.steps[-1] for s in run.steps)
    updates = [o for o in shown.outputs if o.update][:-1]           # the last update is the final Run
    assert len(updates) == len(run.steps)
    magic.preview_interval = 60.0
    shown = sd(ip, "--steps 4")
    assert len([o for o in shown.outputs if o.update]) == 2          # the first preview, then the Run


def test_the_first_run_says_it_loads_the_model_and_leaves_no_loading_bars(ip, session):
    session.set_options(progress=True)
    assert not session.is_loaded()
    with capture_output() as first:
        ip.run_cell_magic("sd", "--steps 2", PROMPT)
    assert "loading model (first run)" in html_of(first.outputs[0])
    assert "Loading pipeline components" not in first.stderr and "Loading weights" not in first.stderr
    with capture_output() as second:
        ip.run_cell_magic("sd", "--steps 2", PROMPT)
    assert "loading model" not in html_of(second.outputs[0]) and "starting" in html_of(second.outputs[0])


def test_no_preview_shows_only_the_result(ip, session):
    shown = sd(ip, "--steps 2 --no-preview")
    assert len(shown.outputs) == 1 and "sdw-run" in html_of(shown.outputs[0])
    assert not shown.outputs[0].update


def test_one_progress_bar_for_the_cell_instead_of_one_per_pipeline_call(ip, session):
    session.set_options(progress=True)
    session.pipeline()                       # loading bars are not ours to judge
    with capture_output() as out:
        ip.run_cell_magic("sd", "--steps 3 --sweep cfg=2,4", PROMPT)
    bars = [s.strip() for s in re.split(r"[\r\n]", out.stderr) if "|" in s]
    assert bars and all(b.startswith("%%sd") for b in bars), bars
    assert session.options.progress and len(session.log) == 2


def test_ctrl_c_interrupts_cleanly_and_the_partial_run_is_logged(ip, session):
    publisher = ActingPublisher(lambda: os.kill(os.getpid(), signal.SIGINT))   # what Ctrl-C / Stop sends
    saved, ip.display_pub = ip.display_pub, publisher
    # Python's own Ctrl-C handler, as in a terminal or a kernel: a process started in the
    # background by a non-interactive shell inherits SIGINT ignored
    saved_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert ip.run_cell_magic("sd", "--steps 8 --out r", PROMPT) is None
    finally:
        ip.display_pub = saved
        signal.signal(signal.SIGINT, saved_handler)
    run = ip.user_ns["r"]
    assert run.status == "interrupted" and len(run.steps) < 8
    assert list(session.log.df["status"]) == ["interrupted"]
    assert "INTERRUPTED" in publisher.outputs[-1]["data"]["text/html"]


def test_sd_interrupt_stops_the_run_and_the_rest_of_the_sweep(ip, session):
    with capture_output() as idle:
        ip.run_line_magic("sd", "interrupt")
    assert "nothing is running" in idle.stdout
    publisher = ActingPublisher(lambda: ip.run_line_magic("sd", "interrupt"))   # e.g. a Stop button's thread
    saved, ip.display_pub = ip.display_pub, publisher
    try:
        ip.run_cell_magic("sd", "--steps 8 --sweep cfg=2,4,6 --out sw", PROMPT)
    finally:
        ip.display_pub = saved
    sweep = ip.user_ns["sw"]
    assert len(sweep) == 1 and sweep.status == "interrupted" and sweep[0].status == "interrupted"
    assert list(session.log.df["status"]) == ["interrupted"]
    assert "not run" in publisher.outputs[-1]["data"]["text/html"]


# ---- usage errors ---------------------------------------------------------------------------


USAGE_ERRORS = [
    ("--bogus 3", PROMPT, "unknown option '--bogus'; choose one of: .*--steps"),
    ("--cfg-scale 7", PROMPT, "unknown option '--cfg-scale'; did you mean '--cfg'\\?"),
    ("--steps zero", PROMPT, "--steps: expected a positive integer, got 'zero'"),
    ("--steps 0", PROMPT, "--steps: expected a positive integer"),
    ("--size 500x500", PROMPT, "--size: width and height must be multiples of 8.*try 496x496 or 504x504"),
    ('--sampler "Euler b"', PROMPT, "--sampler: unknown sampler 'Euler b'; did you mean 'Euler a' or 'Euler'\\?"),
    ('--sampler "Eulr"', PROMPT, "--sampler: unknown sampler 'Eulr'; did you mean 'Euler'\\?"),
    ('--sampler "Nope"', PROMPT, "--sampler: unknown sampler 'Nope'; choose one of: Euler, Euler a"),
    ("", "a {nope} circle", "'nope', not defined in the notebook"),
    ("--seed {missing}", PROMPT, "'missing', not defined"),
    ("--sweep foo=1,2", PROMPT, "unknown parameter 'foo'; sweepable: seed, steps, cfg"),
    ("--sweep steps=2,0", PROMPT, "steps must be >= 1"),
    ("--sweep seed=1..x", PROMPT, "seed range end must be an integer"),
    ("--lora nobody:0.5", PROMPT, "unknown LoRA 'nobody'"),
    ("--lora rign:0.5", PROMPT, "unknown LoRA 'rign'; did you mean 'ring'\\?"),
    ("--model shapez", PROMPT, "model: 'shapez' is not a builtin alias; did you mean 'shapes'\\?"),
    ("--control sketch:img", PROMPT, "unknown kind 'sketch'"),
    ("--init nothing_here", PROMPT, "--init: 'nothing_here' is neither a variable"),
    ("--strength 0.5", PROMPT, "strength only applies with init_image"),
    ("--out 2x", PROMPT, "-o/--out: expected a Python identifier"),
    ("--model no/such/thing!", PROMPT, "model: 'no/such/thing!'"),
    ("--steps 2", "   \n", "the cell is empty"),
    ("--negative \"unclosed", PROMPT, "check the quotes"),
]


def test_usage_errors_name_the_option_and_leave_the_log_untouched(ip, session):
    for line, body, message in USAGE_ERRORS:      # before anything ran: no model work at all
        with pytest.raises(UsageError, match=message):
            ip.run_cell_magic("sd", line, body)
    assert session.loads == 0 and len(session.log) == 0 and not session.log.path.exists()
    sd(ip, "--steps 2 --seed 1")
    before = session.log.path.read_bytes()
    for line, body, message in USAGE_ERRORS:
        with pytest.raises(UsageError, match=message):
            ip.run_cell_magic("sd", line, body)
    assert session.log.path.read_bytes() == before and len(session.log) == 1


def test_a_usage_error_is_one_line_without_traceback(ip, session, capsys):
    result = ip.run_cell("%%sd --steps zero\n" + PROMPT)
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err.strip()
    assert err == "UsageError: %%sd: argument --steps: expected a positive integer, got 'zero'"


# ---- %sd subcommands --------------------------------------------------------------------------


def test_help_lists_every_command_and_explains_one(ip, session):
    with capture_output() as out:
        ip.run_line_magic("sd", "help")
        ip.run_line_magic("sd", "")
    for name in COMMANDS:
        assert out.stdout.count(f"%sd {name}") >= 2
    with capture_output() as out:
        ip.run_line_magic("sd", "help rerun")
        ip.run_line_magic("sd", "help sd")
    assert "template" in out.stdout and "--sweep" in out.stdout and "--control" in out.stdout
    with capture_output() as out:
        ip.run_cell_magic("sd", "-h", PROMPT)          # help instead of a run
    assert "--num-images" in out.stdout and len(session.log) == 0
    with pytest.raises(UsageError, match="unknown command 'paint'; commands: help, model"):
        ip.run_line_magic("sd", "paint")


def test_config_shows_and_sets_magic_settings_and_session_options(ip, session):
    magic = magic_of(ip)
    ip.run_line_magic("config", "SDMagic.steps = 3")
    ip.run_line_magic("config", "SDMagic.sampler = 'ddim'")
    assert (magic.steps, magic.sampler) == (3, "DDIM")
    params = magic.plan("", PROMPT).params[0]          # the defaults reach the run
    assert (params.steps, params.scheduler) == (3, "DDIM")
    assert magic.plan("--steps 5", PROMPT).params[0].steps == 5
    ip.run_line_magic("sd", "config steps=2 size='64x64' vae_slicing=True")
    assert magic.steps == 2 and magic.size == "64x64" and session.options.vae_slicing
    with capture_output() as out:
        ip.run_line_magic("sd", "config")
    assert "steps            = 2" in out.stdout and "vae_slicing=True" in out.stdout
    with pytest.raises(UsageError, match="unknown setting 'colour'"):
        ip.run_line_magic("sd", "config colour=1")
    with pytest.raises(UsageError, match="SDMagic.sampler: unknown sampler 'nope'"):
        ip.run_line_magic("sd", "config sampler=nope")
    with pytest.raises(UsageError, match="multiples of 8"):
        ip.run_line_magic("sd", "config size=65x64")
    assert magic.sampler == "DDIM" and magic.size == "64x64"


def test_log_is_compact_by_default_and_whole_with_all(ip, session):
    from sdwidgets.log import COLUMNS

    sd(ip, '--steps 2 --seed 4 --cfg 3 --lora ring:0.5 --sampler "Euler a"', "a <b>red</b> circle")
    run_id = session.log.df["run_id"].iloc[-1]
    compact = ip.run_line_magic("sd", "log")
    assert compact.rows() == [{"id": run_id[-8:], "prompt": "a <b>red</b> circle", "seed": "4", "sampler": "Euler a",
                               "steps": "2", "CFG": "3", "LoRAs": "ring:0.5",
                               "time": f"{session.log.df['duration_s'].iloc[-1]:.2f} s"}]
    page = compact._repr_html_()
    assert "<th>sampler</th>" in page and "data:image/png;base64," in page     # a thumbnail per row
    assert "&lt;b&gt;red&lt;/b&gt;" in page and "<b>red</b>" not in page       # text is escaped
    assert run_id not in page and run_id[-8:] in page                            # short ids don't wrap the table
    everything = ip.run_line_magic("sd", "log 1 --all")
    assert list(everything.columns) == COLUMNS and everything["run_id"].iloc[0] == run_id


def test_log_show_rerun_compare(ip, session):
    sd(ip, "--steps 2 --seed 4 --cfg 3")
    sd(ip, "--steps 2 --seed 4 --cfg 6")
    first, second = session.log.df["run_id"].unique()
    table = ip.run_line_magic("sd", "log 1")
    assert list(table.df["run_id"]) == [second] and len(ip.run_line_magic("sd", "log")) == 2
    shown = ip.run_line_magic("sd", f"show {first}")
    assert shown.run_id == first and np.array_equal(pixels(shown.image), pixels(session.log.images(first)[0]))
    assert ip.run_line_magic("sd", "show last").run_id == second
    assert ip.run_line_magic("sd", f"show {second[-4:]}").run_id == second        # a unique suffix
    with capture_output() as out:
        assert ip.run_line_magic("sd", f"rerun {first}") is None
    rerun = session.log.df.iloc[-1]
    assert (rerun.seed, rerun.guidance_scale, rerun.source) == (4, 3.0, "rerun")
    assert rerun.run_id in html_of(out.outputs[-1])
    assert np.array_equal(pixels(session.log.images(rerun.run_id)[0]), pixels(session.log.images(first)[0]))
    comparison = ip.run_line_magic("sd", f"compare {first} {second}")
    assert "guidance_scale" in comparison.differing and "<table" in comparison._repr_html_()
    for line, message in [("show zzzz", "no such run"), ("compare last", "usage: %sd compare"),
                          ("log x", "N must be an integer"), ("rerun last paint=1", "cannot change 'paint'")]:
        with pytest.raises(UsageError, match=message):
            ip.run_line_magic("sd", line)


def test_controls_unload_and_dashboard(ip, session, tmp_path):
    session.register_controlnet("canny", str(tmp_path / "my-canny"))
    table = ip.run_line_magic("sd", "controls")
    assert list(table.index) == list(PREPROCESSORS)
    assert table.loc["canny", "controlnet"] == str(tmp_path / "my-canny")
    sd(ip, "--steps 2")
    with capture_output() as out:
        ip.run_line_magic("sd", "unload")
        ip.run_line_magic("sd", "unload")
    assert session.loaded_models == [] and "unloaded" in out.stdout and "was not loaded" in out.stdout
    try:
        from sdwidgets.widgets.dashboard import Dashboard  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="dashboard is not available"):
            ip.run_line_magic("sd", "dashboard")
    else:
        with capture_output() as out:
            assert ip.run_line_magic("sd", "dashboard") is None
        assert any("application/vnd.jupyter.widget-view+json" in o.data for o in out.outputs)


# ---- a real kernel -------------------------------------------------------------------------


def test_in_a_real_kernel_the_preview_updates_in_place_and_one_result_remains(model, tmp_path):
    pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbformat.v4 import new_code_cell, new_notebook

    class Client(nbclient.NotebookClient):
        updates = 0

        def process_message(self, msg, cell, cell_index):
            Client.updates += msg["msg_type"] == "update_display_data"
            return super().process_message(msg, cell, cell_index)

    nb = new_notebook(cells=[
        new_code_cell("%load_ext sdwidgets\nimport sdwidgets as sdw\n"
                      f"sdw.set_session(sdw.Session(log_dir='runs', model={model!r}, progress=False))"),
        new_code_cell(f"%%sd --steps 4 --seed 1 --out r\n{PROMPT}"),
        new_code_cell("print(r.run_id, r.status)"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    Client(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    run_id, status = nb.cells[2].outputs[0]["text"].split()
    results = [o for o in nb.cells[1].outputs if "text/html" in o.get("data", {})]
    assert len(results) == 1 and run_id in results[0]["data"]["text/html"] and status == "ok"
    assert not any(o["output_type"] == "error" for o in nb.cells[1].outputs)
    assert Client.updates >= 2            # previews, then the Run, all into the same output
    records = (tmp_path / "runs" / "records.jsonl").read_text().splitlines()
    assert [json.loads(r)["run_id"] for r in records] == [run_id]
