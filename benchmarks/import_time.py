"""How long `import sdwidgets` (and touching its public names) takes in a fresh interpreter,
beside a bare `import torch`, so the ratio shows what the lazy imports save.

    python benchmarks/import_time.py [rounds]
"""
from __future__ import annotations

import statistics
import subprocess
import sys

SDW = "import sdwidgets as s; s.Session; s.GenerationParams; s.Control; s.Run; s.ExperimentLog"
TORCH = "import torch"


def seconds(code: str) -> float:
    timed = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    sdw, torch = [], []
    for _ in range(rounds):          # alternate, so both see the same machine load
        sdw.append(seconds(SDW))
        torch.append(seconds(TORCH))
    a, b = statistics.median(sdw), statistics.median(torch)
    print(f"import sdwidgets (+ public names): {a * 1000:7.1f} ms (median of {rounds})")
    print(f"import torch:                      {b * 1000:7.1f} ms")
    print(f"ratio sdwidgets / torch:           {a / b:7.3f}")


if __name__ == "__main__":
    main()
