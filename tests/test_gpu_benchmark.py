"""benchmarks/gpu.py at its tiny size on the CPU: both architectures build, load by path and
run through every path of the table (bare, Session default, fast), previews on and off."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_benchmark_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--batches", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| sd")]
    cells = {(r[0].strip(), r[2].strip(), r[4].strip()) for r in rows}
    for model in ("sd15", "sdxl"):
        assert {(model, "bare", "-"), (model, "session", "both"), (model, "session", "none"),
                (model, "fast", "both"), (model, "fast", "none")} <= cells
    assert all(float(r[6]) > 0 for r in rows)                       # steps/s measured
    assert all(r[9].strip() for r in rows if r[2].strip() == "fast" and r[4].strip() == "both")   # compile timed
