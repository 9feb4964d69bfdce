"""ExperimentLog: every generated image, one row each, on disk and as a pandas DataFrame.

Layout of a log folder:
    records.jsonl     one JSON object per image, appended (never rewritten)
    images/           <run_id>-<i>.png with A1111 "parameters" text + our JSON chunk
    inputs/           init and control images by content hash (what rerun needs)

A record is written with a single append of one line; a torn last line (a crash
mid-write) is skipped with a warning and the next append starts on a fresh line.
"""
from __future__ import annotations

import html
import json
import os
import threading
import warnings
from pathlib import Path

from .images import data_url, file_sha256, image_sha256, stored_inputs
from .params import INFOTEXT_KEY, JSON_KEY, GenerationParams

RECORDS = "records.jsonl"
COLUMNS = [
    "run_id", "image_index", "created", "status", "model", "model_hash", "pipeline", "prompt",
    "negative_prompt", "seed", "steps", "guidance_scale", "scheduler", "width", "height", "loras",
    "controls", "init_image_sha256", "strength", "duration_s", "peak_memory_mb", "device", "dtype",
    "torch_version", "diffusers_version", "image_path", "image_sha256", "safety_checker", "nsfw",
    "source", "prompt_template", "template_values", "tags", "error", "params",
]
_TAG_COLUMNS = {"source": "source", "template": "prompt_template", "values": "template_values"}


class ExperimentLog:
    def __init__(self, log_dir, session=None):
        self.dir = Path(log_dir).expanduser()
        self.session = session
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._df = None
        self._offset = 0
        self.refresh()

    # ---- reading -----------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.dir / RECORDS

    def refresh(self) -> None:
        """Read records appended since the last read (also by other processes)."""
        if not self.path.is_file():
            return
        with self._lock, open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for number, line in enumerate(complete):
            if not line.strip():
                continue
            try:
                self._records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{self.path}: skipped a damaged record (line {number + 1} after offset {self._offset})", stacklevel=2)
        self._offset += len(data) - len(tail)
        if tail.strip():
            try:   # a complete last record that only lacks its newline
                self._records.append(json.loads(tail))
                self._offset += len(tail)
            except json.JSONDecodeError:
                warnings.warn(f"{self.path}: skipped a torn last record ({len(tail)} bytes), probably from a crash", stacklevel=2)
                self._offset += len(tail)
        self._df = None

    @property
    def df(self):
        """The log as a DataFrame, one row per image (a fresh copy; edit it freely)."""
        import pandas as pd

        if self._df is None:
            self._df = pd.DataFrame(self._records, columns=COLUMNS)
            self._df["created"] = pd.to_datetime(self._df["created"])
        return self._df.copy()

    def __len__(self) -> int:
        return len(self._records)

    def records(self, run_id: str) -> list[dict]:
        rows = [r for r in self._records if r["run_id"] == run_id]
        if not rows:
            known = ", ".join(dict.fromkeys(r["run_id"] for r in self._records[-5:])) or "none yet"
            raise KeyError(f"run_id {run_id!r} is not in the log {self.dir} (latest: {known})")
        return rows

    def params(self, run_id: str) -> GenerationParams:
        """The exact parameters of a run (init/control images restored from inputs/)."""
        return GenerationParams.from_dict(self.records(run_id)[0]["params"], stored_inputs(self.dir / "inputs"))

    def images(self, run_id: str) -> list:
        from PIL import Image

        return [Image.open(self.dir / r["image_path"]).convert("RGB") for r in self.records(run_id) if r["image_path"]]

    # ---- writing -----------------------------------------------------------------------
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
            # the other tags (rerun_of, sweep, ...) as JSON, so reruns and sweeps stay traceable
            "tags": json.dumps({k: v for k, v in run.tags.items() if k not in _TAG_COLUMNS}, default=str),
            **context,
        }
        params_dict = params.to_dict()
        base["init_image_sha256"] = params_dict["init_image_sha256"]
        rows = []
        n_rows = max(len(run.images), params.num_images)
        for i in range(n_rows):
            row = dict(base, run_id=run.run_id, image_index=i, seed=params.seed + i,
                       width=context["width"], height=context["height"], params=params_dict,
                       image_path=None, image_sha256=None,
                       nsfw=(run.nsfw[i] if run.nsfw and i < len(run.nsfw) else None))
            if i < len(run.images):
                rel = f"images/{run.run_id}-{i}.png"
                self._save_png(run.images[i], self.dir / rel, params, i, context)
                row.update(image_path=rel, image_sha256=file_sha256(self.dir / rel))
            rows.append({k: row.get(k) for k in COLUMNS})
        run.image_paths = [self.dir / r["image_path"] for r in rows if r["image_path"]]
        self._append(rows)
        return rows

    def _append(self, rows: list[dict]) -> None:
        payload = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode()
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

    @staticmethod
    def _save_png(image, path: Path, params: GenerationParams, index: int, context: dict) -> None:
        from PIL.PngImagePlugin import PngInfo

        one = params.replace(seed=params.seed + index, num_images=1, init_image=params.init_image) \
            if index else params.replace(num_images=1)
        info = PngInfo()
        info.add_text(INFOTEXT_KEY, one.infotext(sampler=context["scheduler"], width=context["width"], height=context["height"],
                                                 model_name=context["model"], model_hash=context["model_hash"]))
        info.add_text(JSON_KEY, json.dumps({"params": one.to_dict(), "run_context": {
            k: context[k] for k in ("model", "model_hash", "scheduler", "device", "dtype")}}))
        tmp = path.with_suffix(".tmp")
        image.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)

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

    def last(self, n: int = 10):
        return self.df.tail(n)

    def export(self, path) -> Path:
        """Write the log as Parquet (or CSV by suffix) for analysis elsewhere."""
        path = Path(path)
        df = self.df.drop(columns=["params"])
        df.to_csv(path, index=False) if path.suffix == ".csv" else df.to_parquet(path)
        return path


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
            body += f"<tr{style}><th>{c}</th>{cells}</tr>"
        return f'<table class="sdw-compare"><tr><th></th>{heads}</tr><tr><th></th>{thumbs}</tr>{body}</table>'
