"""The command line: the demo of the README and the small commands around the log."""
from PIL import Image

from sdwidgets.cli import main
from sdwidgets.log import ExperimentLog


def test_demo_runs_the_tour_and_writes_a_contact_sheet(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "bit-identical" in out and "ring 1.0" in out and "ControlNet canny" in out
    sheet = Image.open(tmp_path / "demo" / "demo.png")
    assert sheet.width > 64 * 5 and sheet.height >= 64 * 10
    df = ExperimentLog(tmp_path / "demo" / "runs").df
    assert len(df) == 11 and set(df["status"]) == {"ok"} and set(df["source"]) == {"demo", "rerun"}


def test_generate_log_and_rerun_commands(tmp_path, capsys):
    log_dir = str(tmp_path / "runs")
    assert main(["generate", "a red circle on a blue background", "--seed", "3", "--steps", "4",
                 "--sampler", "Euler a", "-n", "2", "--log-dir", log_dir]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "seed 3 · Euler a · 4 steps" in lines[0] and lines[1].endswith("-0.png")
    run_id = lines[0].split(" · ")[0]
    assert main(["log", "--log-dir", log_dir]) == 0
    assert run_id in capsys.readouterr().out
    assert main(["rerun", run_id, "--log-dir", log_dir]) == 0
    assert "identical to the original" in capsys.readouterr().out
    assert main(["generate", "x", "--steps", "0", "--log-dir", log_dir]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
    assert len(ExperimentLog(log_dir)) == 4
