"""A long session through the dashboard: does memory or widget state grow with the number of runs?

    OMP_NUM_THREADS=1 python benchmarks/soak.py [--runs 1000] [--steps 4] [--warmup 100]

Runs the embedded model `runs` times through a real Dashboard (live previews, scrubber,
log browser refreshed after every run, seeds and prompts varying), and prints the resident
memory (RSS) after the warm-up and at the end, the count of live ipywidgets, of traitlets
observers on the dashboard's widgets and of the log panel's cached thumbnails, then
PASS/FAIL against: RSS growth after warm-up <= 5%, widgets and observers not growing.
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def observers(widget) -> int:
    """traitlets observers on a widget and every widget inside it."""
    count = sum(len(handlers) for names in widget._trait_notifiers.values() for handlers in names.values())
    for child in getattr(widget, "children", ()) or ():
        count += observers(child)
    return count


def snapshot(d) -> dict:
    import ipywidgets.widgets.widget as widget_module

    gc.collect()
    return {"rss_mb": rss_mb(), "widgets": len(widget_module._instances), "observers": observers(d.root),
            "thumbs": len(d.log._thumbs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()

    import sdwidgets as sdw
    from sdwidgets.widgets.dashboard import Dashboard

    colors = ["red", "blue", "green", "yellow", "purple"]
    with tempfile.TemporaryDirectory() as folder:
        session = sdw.Session(log_dir=folder, progress=False)
        d = Dashboard(session=session, steps=args.steps, min_interval=0.0)   # every preview goes to the widget
        start = time.perf_counter()
        warm = None
        for i in range(args.runs):
            d.prompt.prompt.value = f"a {colors[i % 5]} circle on a {colors[(i + 2) % 5]} background"
            d.prompt.seed.value = i
            assert d.generate(), d.prompt.status.value
            assert d.wait(120), "a run did not finish"
            assert d.last_error is None, d.last_error
            if i + 1 == args.warmup:
                warm = snapshot(d)
                print(f"after {args.warmup} runs (warm-up): {warm}", flush=True)
            elif (i + 1) % 100 == 0:
                print(f"after {i + 1} runs: {snapshot(d)}  ({time.perf_counter() - start:.0f} s)", flush=True)
        end = snapshot(d)
        assert len(session.log) == args.runs and session.loads == 1
        growth = end["rss_mb"] / warm["rss_mb"] - 1
        print(f"end: {end}; log {len(session.log)} rows; {time.perf_counter() - start:.0f} s")
        ok = growth <= 0.05 and end["widgets"] <= warm["widgets"] and end["observers"] <= warm["observers"] \
            and end["thumbs"] <= warm["thumbs"]
        print(f"RSS growth after warm-up: {growth * 100:+.2f}% (limit +5%); widgets {warm['widgets']} -> "
              f"{end['widgets']}; observers {warm['observers']} -> {end['observers']}; thumbnails "
              f"{warm['thumbs']} -> {end['thumbs']}: {'PASS' if ok else 'FAIL'}")
        d.close()


if __name__ == "__main__":
    main()
