"""Scores beside the log: `scores.jsonl` in the log folder, one line per (image, score).

records.jsonl is never rewritten; scores are appended here instead, keyed by run id and image
index, and the latest line for a key wins (a recomputed score). Lines read back are data from
a stranger: each is checked, and a bad one costs that line, with a warning.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
import warnings
from pathlib import Path

SCORES = "scores.jsonl"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_score_name(name, reserved=()) -> str:
    """A score's name becomes a DataFrame column: an identifier, and not one of `reserved` (the log's own)."""
    from ..errors import ParamError

    if not isinstance(name, str) or not _NAME.match(name):
        raise ParamError(f"score name must be an identifier (letters, digits, _; at most 64), got {str(name)[:40]!r}")
    if name in reserved:
        raise ParamError(f"score name {name!r} is a column of the log already; choose another name")
    return name


def check_score_line(item) -> tuple[tuple[str, int], str, float | None]:
    """((run_id, image_index), name, value) of one stored line; ValueError naming what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("a score line must be a JSON object")
    run_id, index, name, value = item.get("run_id"), item.get("image_index"), item.get("score"), item.get("value")
    if not isinstance(run_id, str) or not run_id or len(run_id) > 128:
        raise ValueError(f"run_id must be a short non-empty string, got {str(run_id)[:40]!r}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"image_index must be an integer >= 0, got {str(index)[:40]!r}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"score must be an identifier, got {str(name)[:40]!r}")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value)):
        raise ValueError(f"value must be a finite number or null, got {str(value)[:40]!r}")
    return (run_id, index), name, (None if value is None else float(value))


class ScoreStore:
    """{score name: {(run_id, image_index): value}} read from and appended to scores.jsonl."""

    def __init__(self, folder):
        self.path = Path(folder) / SCORES
        self.values: dict[str, dict[tuple[str, int], float | None]] = {}
        self._offset = 0
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        if not self.path.is_file():
            return
        with self._lock, open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
            complete = data[:data.rfind(b"\n") + 1]     # an unfinished last line waits for the next read
            for number, line in enumerate(complete.split(b"\n")):
                if not line.strip():
                    continue
                try:
                    key, name, value = check_score_line(json.loads(line.decode("utf-8")))
                except (ValueError, UnicodeDecodeError) as exc:
                    warnings.warn(f"{self.path}: skipped a damaged score line ({number + 1} after offset "
                                  f"{self._offset}): {exc}", stacklevel=2)
                    continue
                self.values.setdefault(name, {})[key] = value
            self._offset += len(complete)

    def has(self, name: str, key: tuple[str, int]) -> bool:
        return key in self.values.get(name, {})

    def add(self, name: str, items: list[tuple[tuple[str, int], float | None]]) -> None:
        """Append scores (one write, one fsync), then read them back like any other line."""
        if not items:
            return
        payload = "".join(json.dumps({"run_id": k[0], "image_index": k[1], "score": name, "value": v},
                                     allow_nan=False) + "\n" for k, v in items).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size:
                    with open(self.path, "rb") as f:
                        f.seek(-1, os.SEEK_END)
                        if f.read(1) != b"\n":
                            payload = b"\n" + payload     # never glue onto a torn line
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.refresh()

    def attach(self, df):
        """`df` (the log's rows) with one column per score (NaN where an image has none)."""
        for name in sorted(self.values):
            stored = self.values[name]
            df[name] = [stored.get((r, int(i))) for r, i in zip(df["run_id"], df["image_index"])]
            df[name] = df[name].astype(float)
        return df


def score_log(log, name: str, fn, *, recompute: bool = False, run_ids=None, batch_size: int = 32,
              progress: bool = True, reserved=()):
    """Apply `fn(image, params) -> number` (or a batch scorer) to the logged images that lack
    score `name` (all of them with recompute=True); store and return the column as a Series."""
    from ..errors import ParamError

    check_score_name(name, reserved)
    if not callable(fn):
        raise ParamError(f"log.score: fn must be a function (image, params) -> number, got {type(fn).__name__}")
    log.refresh()
    store = log.scores
    wanted = None if run_ids is None else set(run_ids)
    todo = [r for r in log._records if r.get("image_path") and (wanted is None or r["run_id"] in wanted)
            and (recompute or not store.has(name, (r["run_id"], r["image_index"])))]
    params_of: dict = {}
    chunk = batch_size if getattr(fn, "batch", False) else 1
    bar = _progress(len(todo), f"score {name}", progress)
    for start in range(0, len(todo), chunk):
        rows = todo[start:start + chunk]
        images, params = [], []
        for r in rows:
            images.append(_image(log, r))
            if r["run_id"] not in params_of:
                params_of[r["run_id"]] = log.params(r["run_id"])
            params.append(params_of[r["run_id"]].replace(seed=r["seed"], num_images=1))
        values = fn(images, params) if chunk > 1 else [fn(images[0], params[0])]
        values = list(values)
        if len(values) != len(rows):
            raise ParamError(f"scorer {name!r} returned {len(values)} values for {len(rows)} images")
        store.add(name, [((r["run_id"], r["image_index"]), _number(name, v)) for r, v in zip(rows, values)])
        bar.update(len(rows))
    bar.close()
    log._df = None
    df = log.df
    return df.set_index(["run_id", "image_index"])[name] if name in df else None


def _image(log, record):
    from PIL import Image

    with Image.open(log.image_file(record)) as im:
        return im.convert("RGB")


def _number(name: str, value) -> float | None:
    from ..errors import ParamError

    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParamError(f"scorer {name!r} must return a number, got {str(value)[:40]!r}") from None
    return number if math.isfinite(number) else None


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not show or total < 2)
