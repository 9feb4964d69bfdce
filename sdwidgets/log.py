"""ExperimentLog: every generated image, one row each, on disk and as a pandas DataFrame.

Layout of a log folder:
    records.jsonl     one JSON object per image, appended (never rewritten)
    images/           <run_id>-<i>.png with A1111 "parameters" text + our JSON chunk
    scores.jsonl      scores of images by (run_id, image_index), appended (log.score)
    inputs/           init and control images by content hash (what rerun needs)

A record is written with a single append of one line; a torn last line (a crash
mid-write) is skipped with a warning and the next append starts on a fresh line.
"""
from __future__ import annotations

import html
import json
import os
import threading
import time
import warnings
from pathlib import Path

from .errors import ParamError
from .evaluation.store import ScoreStore
from .images import data_url, file_sha256, image_sha256, stored_inputs
from .params import INFOTEXT_KEY, JSON_KEY, GenerationParams

RECORDS = "records.jsonl"
COLUMNS = [
    "run_id", "image_index", "batch_index", "batch_size", "created", "status", "model", "model_hash", "family",
    "pipeline", "prompt",
    "negative_prompt", "seed", "steps", "guidance_scale", "scheduler", "width", "height", "loras",
    "controls", "init_image_sha256", "strength", "duration_s", "peak_memory_mb", "device", "dtype", "preview",
    "torch_version", "diffusers_version", "image_path", "image_sha256", "safety_checker", "nsfw",
    "source", "prompt_template", "template_values", "prompt_set", "prompt_set_hash", "tags", "error", "params",
]
_TAG_COLUMNS = {"source": "source", "template": "prompt_template", "values": "template_values",
                "prompt_set": "prompt_set", "prompt_set_hash": "prompt_set_hash"}

# What a record read from a file must look like (records are data from strangers).
_REQUIRED = ("run_id", "image_index", "created", "params")
# every column that is not text is named here (check_record refuses any other type)
_INTS = ("image_index", "batch_index", "batch_size", "seed", "steps", "width", "height")
_NUMBERS = ("guidance_scale", "strength", "duration_s", "peak_memory_mb")
_FLAGS = ("safety_checker", "nsfw")


def _parse(line: bytes, strict: bool = False):
    """One JSON line -> object; None (or ValueError when strict) if it is not UTF-8 JSON."""
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        if strict:
            reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else f"not JSON ({exc})"
            raise ValueError(reason) from None
        return None


def _no_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def check_record(record) -> dict:
    """A record as read from records.jsonl, checked field by field; ValueError naming what is wrong."""
    import datetime

    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if not isinstance(record["run_id"], str) or not record["run_id"]:
        raise ValueError(f"run_id must be a non-empty string, got {record['run_id']!r}")
    if not isinstance(record["params"], dict):
        raise ValueError("params must be a JSON object")
    for key in COLUMNS:
        value = record.get(key)
        if value is None:
            if key == "image_index":
                raise ValueError("image_index must be an integer")
            continue
        if key in _INTS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif key in _NUMBERS:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif key in _FLAGS:
            ok = isinstance(value, bool)
        elif key == "params":
            ok = True
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ValueError(f"{key} has a wrong type or value: {str(value)[:40]!r}")
    try:
        datetime.datetime.fromisoformat(record["created"])
    except (TypeError, ValueError):
        raise ValueError(f"created is not an ISO date: {str(record['created'])[:40]!r}") from None
    return {k: record.get(k) for k in COLUMNS}


class ExperimentLog:
    def __init__(self, log_dir, session=None):
        self.dir = Path(log_dir).expanduser()
        self.session = session
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._df = None
        self._offset = 0
        self._torn_warned = None
        self.scores = ScoreStore(self.dir)
        self.refresh()

    # ---- reading -----------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.dir / RECORDS

    def refresh(self) -> None:
        """Read records appended since the last read (also by other processes).

        Each line is checked like user input (see check_record): a bad one costs that line, with
        a warning. A last line without its newline may still be being written by another process:
        it is left for the next read, and only called torn if the file stops growing.
        """
        if not self.path.is_file():
            return
        with self._lock:
            data = self._read_new()
            lines = data.split(b"\n")
            complete, tail = lines[:-1], lines[-1]
            start = self._offset
            for number, line in enumerate(complete):
                self._take(line, f"line {number + 1} after offset {start}")
            self._offset += len(data) - len(tail)
            if tail.strip():
                record = _parse(tail)
                if isinstance(record, dict):    # a complete last record that only lacks its newline
                    self._take(tail, "the last line")
                    self._offset += len(tail)
                elif self._torn_warned != (self._offset, len(tail)):
                    self._torn_warned = (self._offset, len(tail))
                    warnings.warn(f"{self.path}: skipped a torn last record ({len(tail)} bytes), probably from "
                                  "a crash", stacklevel=2)
        self.scores.refresh()
        self._df = None

    def _read_new(self) -> bytes:
        """Bytes after the offset; an unfinished last line is re-read while the file is still growing."""
        for attempt in range(20):
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            if not data or data.endswith(b"\n") or isinstance(_parse(data.rsplit(b"\n", 1)[-1]), dict):
                return data
            time.sleep(0.005 * (attempt + 1))
            if self.path.stat().st_size == self._offset + len(data):
                return data                      # not growing: a torn line (or a stalled writer)
        return data

    def _take(self, line: bytes, where: str) -> None:
        if not line.strip():
            return
        try:
            self._records.append(check_record(_parse(line, strict=True)))
        except ValueError as exc:
            warnings.warn(f"{self.path}: skipped a damaged record ({where}): {exc}", stacklevel=3)

    @property
    def df(self):
        """The log as a DataFrame, one row per image (a fresh copy; edit it freely)."""
        import pandas as pd

        if self._df is None:
            self._df = pd.DataFrame(self._records, columns=COLUMNS)
            self._df["created"] = pd.to_datetime(self._df["created"], format="ISO8601", utc=True)
            self._df = self.scores.attach(self._df)      # one column per score (log.score)
        return self._df.copy()

    def __len__(self) -> int:
        return len(self._records)

    def image_file(self, record: dict) -> Path | None:
        """The record's image inside the log folder; ParamError if its path leads outside."""
        rel = record.get("image_path")
        if not rel:
            return None
        path = (self.dir / rel).resolve()
        if Path(rel).is_absolute() or not path.is_relative_to(self.dir.resolve()):
            raise ParamError(f"run {record['run_id']}: image_path {rel!r} points outside the log folder {self.dir}; "
                             "refused")
        return path

    def records(self, run_id: str) -> list[dict]:
        rows = [r for r in self._records if r["run_id"] == run_id]
        if not rows:
            known = ", ".join(dict.fromkeys(r["run_id"] for r in self._records[-5:])) or "none yet"
            raise KeyError(f"run_id {run_id!r} is not in the log {self.dir} (latest: {known})")
        return rows

    def resolve(self, text: str) -> str:
        """The run id meant by `text`: an exact id, `last`, or a unique prefix/suffix of one."""
        ids = list(dict.fromkeys(r["run_id"] for r in self._records))
        if not ids:
            raise ParamError(f"the log {self.dir} is empty: generate something first")
        if text == "last":
            return ids[-1]
        if text in ids:
            return text
        matches = [i for i in ids if i.startswith(text) or i.endswith(text)]
        if len(matches) == 1:
            return matches[0]
        hint = f"{len(matches)} runs match" if matches else "no such run"
        raise ParamError(f"run id {text!r}: {hint}; latest: {', '.join(ids[-3:])} (or `last`)")

    def params(self, run_id: str) -> GenerationParams:
        """The exact parameters of a run (init/control images restored from inputs/)."""
        stored = self.records(run_id)[0]["params"]
        try:
            return GenerationParams.from_dict(stored, stored_inputs(self.dir / "inputs"))
        except ParamError as exc:
            raise ParamError(f"run {run_id}: its logged parameters are invalid: {exc}") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise ParamError(f"run {run_id}: its logged parameters are damaged ({type(exc).__name__}: {exc})") from None

    def images(self, run_id: str) -> list:
        from PIL import Image

        out = []
        for record in self.records(run_id):
            path = self.image_file(record)
            if path is not None:
                with Image.open(path) as im:
                    out.append(im.convert("RGB"))
        return out

    # ---- writing -----------------------------------------------------------------------
    def check_writable(self) -> None:
        """ParamError unless runs can be recorded here (checked before a run, so no image is lost)."""
        import tempfile

        if self.dir.exists() and not self.dir.is_dir():
            raise ParamError(f"log_dir {str(self.dir)!r} is a file, not a folder; pass a folder (created if missing)")
        existing = self.dir
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ParamError(f"log_dir {str(self.dir)!r} cannot be created: {str(existing)!r} is a file")
        for folder in (existing, self.dir / "images"):
            if folder.is_dir():
                try:
                    tempfile.TemporaryFile(dir=folder).close()      # a real write: permissions, read-only mounts
                except OSError as exc:
                    raise ParamError(f"log_dir {str(self.dir)!r} is not writable ({exc.strerror}: {folder}); "
                                     "pass a folder you can write to") from None
        if self.path.exists():
            try:
                open(self.path, "ab").close()
            except OSError as exc:
                raise ParamError(f"log_dir {str(self.dir)!r}: {RECORDS} is not writable ({exc.strerror})") from None

    def add(self, run, context: dict) -> list[dict]:
        """Save a Run's images and append one record per image. Returns the records."""
        import datetime

        params = run.params
        (self.dir / "images").mkdir(parents=True, exist_ok=True)
        self._store_inputs(params)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat()
        base = {
            "created": created, "status": run.status, "pipeline": run.pipeline_class,
            "prompt": params.prompt, "negative_prompt": params.negative_prompt, "steps": params.steps,
            "guidance_scale": params.guidance_scale, "scheduler": run.sampler,
            "loras": json.dumps(dict(params.loras)), "controls": json.dumps([c.to_dict() for c in params.controls]),
            "strength": params.strength, "duration_s": round(run.duration_s, 4), "error": run.error,
            "source": run.tags.get("source", "api"), "prompt_template": run.tags.get("template"),
            "template_values": json.dumps(run.tags["values"]) if "values" in run.tags else None,
            "prompt_set": run.tags.get("prompt_set"), "prompt_set_hash": run.tags.get("prompt_set_hash"),
            # the other tags (rerun_of, sweep, ...) as JSON, so reruns and sweeps stay traceable
            "tags": json.dumps({k: v for k, v in run.tags.items() if k not in _TAG_COLUMNS}, default=str),
            **context,
        }
        params_dict = params.to_dict()
        base["init_image_sha256"] = params_dict["init_image_sha256"]
        rows = []
        n_rows = max(len(run.images), params.num_images)
        # the batch layout: image i was made in call batch_of[i] of batch_sizes[batch_of[i]] images
        batch_sizes = params.batches
        batch_of = [b for b, size in enumerate(batch_sizes) for _ in range(size)]
        for i in range(n_rows):
            b = batch_of[min(i, len(batch_of) - 1)]
            row = dict(base, run_id=run.run_id, image_index=i, batch_index=b, batch_size=batch_sizes[b],
                       seed=params.seed + i,
                       width=context["width"], height=context["height"], params=params_dict,
                       image_path=None, image_sha256=None,
                       nsfw=(run.nsfw[i] if run.nsfw and i < len(run.nsfw) else None))
            if i < len(run.images):
                rel = self._save_png(run.images[i], f"{run.run_id}-{i}", params, i, context)
                row.update(image_path=rel, image_sha256=file_sha256(self.dir / rel))
            rows.append({k: row.get(k) for k in COLUMNS})
        run.image_paths = [self.dir / r["image_path"] for r in rows if r["image_path"]]
        self._append(rows)
        return rows

    def _append(self, rows: list[dict]) -> None:
        payload = "".join(json.dumps(_finite(r), default=str, allow_nan=False) + "\n" for r in rows).encode()
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                    payload = b"\n" + payload   # never glue a record onto a torn one
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.refresh()

    def _store_inputs(self, params: GenerationParams) -> None:
        images = [im for im in (params.init_image, params.mask_image) if im is not None]
        images += [c.image for c in params.controls]
        if not images:
            return
        folder = self.dir / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        for im in images:
            path = folder / f"{image_sha256(im)}.png"
            if not path.exists():
                im.save(path)

    def _save_png(self, image, stem: str, params: GenerationParams, index: int, context: dict) -> str:
        """Write images/<stem>.png; never replaces a file (another run's) already there. Returns its relative path."""
        import secrets

        from PIL.PngImagePlugin import PngInfo

        one = params.replace(seed=params.seed + index, num_images=1, init_image=params.init_image) \
            if index else params.replace(num_images=1)
        info = PngInfo()
        info.add_text(INFOTEXT_KEY, one.infotext(sampler=context["scheduler"], width=context["width"], height=context["height"],
                                                 model_name=context["model"], model_hash=context["model_hash"]))
        info.add_text(JSON_KEY, json.dumps({"params": one.to_dict(), "run_context": {
            k: context[k] for k in ("model", "model_hash", "scheduler", "device", "dtype")}}))
        folder = self.dir / "images"
        tmp = folder / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        image.save(tmp, format="PNG", pnginfo=info)
        try:
            for attempt in range(100):
                name = f"{stem}.png" if attempt == 0 else f"{stem}-{attempt}.png"
                try:
                    os.link(tmp, folder / name)     # atomic and exclusive: fails if the name is taken
                    return f"images/{name}"
                except FileExistsError:
                    continue
            raise FileExistsError(f"{folder}: no free file name for {stem}.png")
        finally:
            tmp.unlink(missing_ok=True)

    # ---- using -------------------------------------------------------------------------
    def rerun(self, run_id: str, image_index: int | None = None, **changes):
        """Generate again with the same parameters and seed (one image of a batch with image_index)."""
        if self.session is None:
            raise RuntimeError("this log is not attached to a Session; use Session(log_dir=...).log.rerun")
        params = self.params(run_id)
        if image_index is not None:
            if not 0 <= image_index < params.num_images:
                raise ValueError(f"image_index must be in [0, {params.num_images - 1}], got {image_index}")
            params = params.replace(seed=params.seed + image_index, num_images=1)
        if changes:
            params = params.replace(**changes)
        return self.session.generate(params=params, tags={"source": "rerun", "rerun_of": run_id})

    def compare(self, run_ids, columns=None) -> "Comparison":
        """Images of several runs side by side, the parameters that differ highlighted."""
        return Comparison(self, list(run_ids), columns)

    def score(self, name: str, fn, *, recompute: bool = False, run_ids=None, progress: bool = True):
        """Score the logged images that lack `name` with fn(image, params) -> number (or a batch scorer,
        fn.batch = True); stored in scores.jsonl, so the column survives restarts. Returns the column."""
        from .evaluation.store import score_log

        return score_log(self, name, fn, recompute=recompute, run_ids=run_ids, progress=progress,
                         reserved=COLUMNS)

    def last(self, n: int = 10):
        return self.df.tail(n)

    def export(self, path) -> Path:
        """Write the log as Parquet (or CSV by suffix) for analysis elsewhere."""
        path = Path(path)
        df = self.df.drop(columns=["params"])
        df.to_csv(path, index=False) if path.suffix == ".csv" else df.to_parquet(path)
        return path


def _finite(value):
    """NaN/inf (never valid, but never written as non-standard JSON either) -> None."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


COMPARED = ["prompt", "negative_prompt", "seed", "steps", "guidance_scale", "scheduler", "width", "height",
            "loras", "controls", "strength", "model", "status", "duration_s"]


class Comparison:
    """Runs side by side; `.diff` is the DataFrame of parameters that differ."""

    def __init__(self, log: ExperimentLog, run_ids: list[str], columns=None):
        if len(run_ids) < 2:
            raise ValueError("compare needs at least two run ids")
        self.log, self.run_ids = log, run_ids
        self.rows = [log.records(r)[0] for r in run_ids]
        self.columns = columns or COMPARED
        self.differing = [c for c in self.columns if len({json.dumps(r.get(c), default=str) for r in self.rows}) > 1]

    @property
    def table(self):
        import pandas as pd

        return pd.DataFrame([{c: r.get(c) for c in self.columns} for r in self.rows], index=self.run_ids).T

    @property
    def diff(self):
        return self.table.loc[self.differing]

    def _repr_html_(self) -> str:
        heads = "".join(f"<th>{html.escape(r)}</th>" for r in self.run_ids)
        img = '<img src="{}" style="image-rendering:pixelated;margin:2px"/>'
        thumbs = "".join("<td>" + "".join(img.format(data_url(im, 192)) for im in self.log.images(r)) + "</td>"
                         for r in self.run_ids)
        body = ""
        for c in self.columns:
            style = ' style="background:#fff3b0;font-weight:bold"' if c in self.differing else ""
            cells = "".join(f"<td>{html.escape(str(r.get(c)))}</td>" for r in self.rows)
            body += f"<tr{style}><th>{html.escape(str(c))}</th>{cells}</tr>"
        return f'<table class="sdw-compare"><tr><th></th>{heads}</tr><tr><th></th>{thumbs}</tr>{body}</table>'
