"""The command line with a user's mistakes and faults: one line and exit code 2, Ctrl-C 130, --help everywhere."""
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from sdwidgets.cli import main
from sdwidgets.log import ExperimentLog
from sdwidgets.models import BUILTIN_MODELS

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = BUILTIN_MODELS["shapes"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_a_corrupt_model_is_one_line_and_exit_2(tmp_path, capsys):
    broken = tmp_path / "broken-model"
    shutil.copytree(EMBEDDED, broken, ignore=shutil.ignore_patterns("controlnet-*", "loras"))
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])           # truncated download
    assert main(["generate", "x", "--steps", "1", "--model", str(broken), "--log-dir", str(tmp_path / "r")]) == 2
    assert "cannot load" in one_error_line(capsys)
    assert not (tmp_path / "r" / "records.jsonl").exists()


def bomb_png(path: Path, side: int = 40000) -> Path:
    """A tiny PNG file whose header claims side x side pixels (what a decompression bomb does)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_init_image_is_refused(tmp_path, capsys):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert main(["generate", "x", "--steps", "1", "--init", str(bomb), "--log-dir", str(tmp_path / "r")]) == 2
    assert "too large to decode safely" in one_error_line(capsys)


def test_log_dir_pointing_at_a_file(tmp_path, capsys):
    path = tmp_path / "file.txt"
    path.write_text("keep me")
    for argv in (["generate", "x", "--steps", "1"], ["log"], ["rerun", "abc"]):
        assert main([*argv, "--log-dir", str(path)]) == 2
        assert "is a file" in one_error_line(capsys)
    assert path.read_text() == "keep me"


def test_log_and_rerun_on_a_log_with_bad_lines(tmp_path, capsys):
    log_dir = str(tmp_path / "runs")
    assert main(["generate", "a red circle", "--seed", "2", "--steps", "2", "--log-dir", log_dir]) == 0
    run_id = capsys.readouterr().out.split(" · ")[0]
    with open(tmp_path / "runs" / "records.jsonl", "ab") as f:
        f.write(b"null\n\xff\xfe\n{}\n42\n")
    # a real process: pytest would record the warnings instead of letting them reach stderr
    code = f"from sdwidgets.cli import main; raise SystemExit(main(['log', '--log-dir', {log_dir!r}]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert run_id in done.stdout and done.stderr.count("warning: ") == 4 and "Traceback" not in done.stderr
    assert main(["rerun", run_id, "--log-dir", log_dir]) == 0
    assert "identical to the original" in capsys.readouterr().out
    assert len(ExperimentLog(log_dir)) == 2
    assert main(["rerun", "' or __import__('os') or '", "--log-dir", log_dir]) == 2
    assert "not in the log" in one_error_line(capsys)


def test_ctrl_c_during_generate_exits_130_and_logs_the_partial_run(tmp_path):
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from sdwidgets.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "generate", "a circle", "--steps", "400",
                             "--log-dir", str(tmp_path / "r")], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    err, started = [], threading.Event()

    def read():
        for chunk in iter(lambda: proc.stderr.read(1), ""):
            err.append(chunk)
            if "/400" in "".join(err[-40:]):
                started.set()
    threading.Thread(target=read, daemon=True).start()
    assert started.wait(120), "".join(err)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert "Traceback" not in "".join(err)
    assert list(ExperimentLog(tmp_path / "r").df["status"]) == ["interrupted"]


@pytest.mark.parametrize("command", ["demo", "generate", "log", "rerun", "train"])
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: sdwidgets {command}" in capsys.readouterr().out


def test_a_bare_train_starts_nothing_and_says_what_it_needs(tmp_path, capsys):
    before = {p: p.stat().st_mtime for p in EMBEDDED.rglob("*")}
    assert main(["train"]) == 2
    assert "--out" in one_error_line(capsys)
    assert main(["train", "nope", "--out", str(tmp_path / "t")]) == 2
    assert "unknown stage 'nope'" in one_error_line(capsys)
    assert {p: p.stat().st_mtime for p in EMBEDDED.rglob("*")} == before
    assert not (ROOT / "training-work").exists() or (ROOT / "training-work").stat().st_mtime < time.time() - 5


def test_train_knows_every_stage_of_the_recipe():
    from sdwidgets.cli import _recipe_stages
    from sdwidgets.training.shapes import STAGES

    assert sorted(_recipe_stages()[0]) == sorted(STAGES)
