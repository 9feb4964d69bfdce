"""Fail before the work: unusable log folders, overflowing seeds, too many steps, options that
cannot apply, non-finite numbers, limits, and run ids that never collide.

Each test makes the fault itself and checks the clear error and that nothing ran or was logged.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image

import sdwidgets as sdw
from sdwidgets.errors import ParamError
from sdwidgets.params import GenerationParams

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ip(session):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sdwidgets")
    yield shell
    magic = shell.magics_manager.registry["SDMagic"]
    for name, trait in magic.class_traits(config=True).items():
        magic.set_trait(name, trait.default())


def pngs(session):
    return sorted((session.log.dir / "images").glob("*.png")) if (session.log.dir / "images").is_dir() else []


# ---- log_dir -------------------------------------------------------------------------------------

def test_a_log_dir_that_is_a_file_is_refused_at_session(tmp_path, model):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    for log_dir in (path, path / "runs"):
        with pytest.raises(ParamError, match="is a file"):
            sdw.Session(log_dir=log_dir, model=model)
    assert path.read_text() == "mine"


def as_nobody(code: str) -> subprocess.CompletedProcess:
    """Run python code as an unprivileged user (root ignores folder permissions)."""
    if os.geteuid() != 0:
        cmd = [sys.executable, "-c", code]
    elif shutil.which("setpriv"):
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code]
    else:
        pytest.skip("needs setpriv to drop root")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_a_read_only_log_dir_is_refused_before_any_work():
    top = Path(tempfile.mkdtemp(prefix="sdw-ro-"))
    try:
        top.chmod(0o755)
        (top / "runs" / "images").mkdir(parents=True)
        (top / "runs" / "records.jsonl").write_text("")
        for p in (top / "runs", top / "runs" / "images"):
            p.chmod(0o555)
        before = sorted(p.name for p in (top / "runs").rglob("*"))
        result = as_nobody(f"""
import sdwidgets as sdw
from sdwidgets.errors import ParamError
try:
    sdw.Session(log_dir={str(top / 'runs')!r})
except ParamError as exc:
    print("REFUSED", exc)
""")
        assert "REFUSED" in result.stdout and "not writable" in result.stdout, result.stderr[-2000:]
        assert sorted(p.name for p in (top / "runs").rglob("*")) == before
    finally:
        for p in (top / "runs", top / "runs" / "images"):
            p.chmod(0o755)
        shutil.rmtree(top)


def test_a_log_dir_that_turns_into_a_file_fails_before_the_run(session):
    session.generate("a circle", seed=1, steps=2)
    loads = session.loads
    moved = session.log.dir.with_name("moved")
    session.log.dir.rename(moved)
    session.log.dir.write_text("not a folder any more")
    with pytest.raises(ParamError, match="is a file"):
        session.generate("a circle", seed=2, steps=2)
    assert session.loads == loads and len(list((moved / "images").glob("*.png"))) == 1


# ---- seeds, steps, options -------------------------------------------------------------------------

def test_a_seed_that_overflows_with_num_images_fails_in_validation(session):
    with pytest.raises(ParamError, match=r"seed \+ num_images - 1 must be < 2\*\*63"):
        GenerationParams("a circle", seed=2**63 - 2, num_images=4)
    with pytest.raises(ParamError, match="2\\*\\*63"):
        session.generate("a circle", seed=2**63 - 1, num_images=2, steps=2)
    assert len(session.log) == 0 and pngs(session) == [] and session.loads == 0
    assert GenerationParams("a circle", seed=2**63 - 2, num_images=2).seed == 2**63 - 2


def test_steps_beyond_what_the_scheduler_supports_fail_before_denoising(session, monkeypatch):
    with pytest.raises(ParamError, match="steps must be <= 500.*SDW_MAX_STEPS"):
        session.generate("a circle", steps=501)
    monkeypatch.setenv("SDW_MAX_STEPS", "5000")
    start = time.perf_counter()
    for sampler, message in ((None, "steps must be < 1000"), ("DDIM", "steps must be < 1000"),
                             ("LCM", "LCM cannot run 60 steps")):
        with pytest.raises(ParamError, match=message):
            session.generate("a circle", steps=1000 if message.startswith("steps must") else 60, scheduler=sampler)
    assert time.perf_counter() - start < 20        # 1,000 steps of denoising would take far longer
    assert len(session.log) == 0 and pngs(session) == []
    assert session.generate("a circle", seed=1, steps=2, scheduler="LCM").status == "ok"


def test_a_failed_option_leaves_the_options_and_the_session_working(session):
    session.generate("a circle", seed=1, steps=2)
    before = session.options.as_dict()
    with pytest.raises(ParamError, match="xformers"):
        session.set_options(xformers=True)
    with pytest.raises(ParamError, match="cpu_offload='sequential'.*cpu"):
        session.set_options(cpu_offload="sequential", attention_slicing=True)
    with pytest.raises(ParamError, match="cpu_offload='model'"):
        session.set_options(cpu_offload="model")
    assert session.options.as_dict() == before
    assert session.generate("a circle", seed=1, steps=2).status == "ok"
    with pytest.raises(ParamError, match="cpu_offload='sequential'"):
        sdw.Session(log_dir=session.log.dir, device="cpu", cpu_offload="sequential")


# ---- non-finite numbers and limits ------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_for_every_float_field(bad):
    image = Image.new("RGB", (64, 64))
    for kwargs, field in (({"guidance_scale": bad}, "guidance_scale"), ({"loras": {"ring": bad}}, "loras"),
                          ({"init_image": image, "strength": bad}, "strength")):
        with pytest.raises(ParamError, match=f"{field}.*finite"):
            GenerationParams("a circle", **kwargs)
    for name in ("scale", "start", "end"):
        with pytest.raises(ParamError, match=f"controls\\[canny\\].{name} must be a finite number"):
            sdw.Control("canny", image, **{name: bad})


def test_nan_from_the_magic_is_refused_and_nothing_logged(ip, session):
    for line in ("--cfg nan", "--cfg inf", "--lora ring:nan", "--sweep cfg=1,nan", "--sweep lora:ring=0,inf"):
        with pytest.raises(UsageError, match="finite|expected"):
            ip.run_cell_magic("sd", f"--steps 2 {line}", "a red sks")
    assert len(session.log) == 0 and session.loads == 0


def test_no_log_row_ever_holds_non_standard_json(session):
    session.generate("a circle", seed=1, steps=2, guidance_scale=4.5)
    for line in session.log.path.read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard JSON {name}"))
    from sdwidgets.log import _finite
    assert _finite({"a": [math.nan, 1.0], "b": math.inf}) == {"a": [None, 1.0], "b": None}


def test_size_steps_and_images_have_limits_that_name_how_to_lift_them(session, monkeypatch):
    for kwargs, env in (({"width": 100000}, "SDW_MAX_SIDE"), ({"height": 8192}, "SDW_MAX_SIDE"),
                        ({"steps": 10**9}, "SDW_MAX_STEPS"), ({"num_images": 65}, "SDW_MAX_IMAGES")):
        with pytest.raises(ParamError, match=f"must be <= .*{env}=N"):
            session.generate("a circle", **kwargs)
    assert session.loads == 0 and len(session.log) == 0
    monkeypatch.setenv("SDW_MAX_SIDE", "16384")
    assert GenerationParams("a circle", width=8192).width == 8192
    monkeypatch.setenv("SDW_MAX_SIDE", "lots")
    with pytest.raises(ParamError, match="SDW_MAX_SIDE must be a positive integer"):
        GenerationParams("a circle", width=64)


def test_a_huge_sweep_fails_fast_without_building_its_list(ip, session):
    start = time.perf_counter()
    with pytest.raises(UsageError, match="300000000 values is more than SDMagic.max_runs=64"):
        ip.run_cell_magic("sd", "--sweep seed=1..300000000", "a circle")
    ip.run_line_magic("config", "SDMagic.max_runs = 10**9")
    with pytest.raises(UsageError, match="SDW_MAX_SWEEP_VALUES"):
        ip.run_cell_magic("sd", "--sweep seed=1..300000000", "a circle")
    assert time.perf_counter() - start < 2 and len(session.log) == 0


def test_max_runs_counts_images(ip, session):
    ip.run_line_magic("config", "SDMagic.max_runs = 6")
    with pytest.raises(UsageError, match="8 images in this cell is more than SDMagic.max_runs=6"):
        ip.run_cell_magic("sd", "-n 4 --sweep seed=1,2", "a circle")
    with capture_output():
        ip.run_cell_magic("sd", "--steps 2 -n 3 --sweep seed=1,2", "a circle")
    assert len(session.log) == 6


# ---- run ids and image files -----------------------------------------------------------------------

DRAW_IDS = "from sdwidgets.session import new_run_id; print('\\n'.join(new_run_id() for _ in range(3000)))"


def test_run_ids_are_unique_across_processes():
    procs = [subprocess.Popen([sys.executable, "-c", DRAW_IDS], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(2)]
    ids = [i for p in procs for i in p.communicate()[0].split()]
    assert len(ids) == 6000 and len(set(ids)) == 6000


def test_a_forced_run_id_collision_never_replaces_the_first_image(session, monkeypatch):
    import importlib

    module = importlib.import_module("sdwidgets.session")     # (sdw.session is the function)
    monkeypatch.setattr(module, "new_run_id", lambda: "20260101-000000-same")
    a = session.generate("a red circle", seed=1, steps=2)
    first = a.image_paths[0].read_bytes()
    b = session.generate("a blue square", seed=2, steps=2)
    assert a.image_paths[0] != b.image_paths[0] and a.image_paths[0].read_bytes() == first
    paths = list(session.log.df["image_path"])
    assert len(set(paths)) == 2 and all((session.log.dir / p).is_file() for p in paths)
    assert not list((session.log.dir / "images").glob("*.tmp"))
