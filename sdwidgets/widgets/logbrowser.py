"""Log panel: recent runs as a table; select one to see it (and fill the prompt panel),
re-run it, or select two to compare them with the differing parameters highlighted."""
from __future__ import annotations

import html
import json

import ipywidgets as W

from ..images import data_url
from ..run import shorten
from .actions import ImageActions
from .base import Panel, image_value, image_widget, message, short_error
from .scoreplot import ScorePlotPanel

THUMB = 40


class LogPanel(Panel):
    """Listeners: `on_select(cb)` -> cb(params) (one row picked, or "To prompt");
    `on_rerun(cb)` -> cb(run_id)."""

    def __init__(self, session, limit: int = 20):
        super().__init__()
        self.session, self.limit = session, limit
        self.table = W.HTML()
        self.select = W.SelectMultiple(options=[], rows=8, description="", layout=W.Layout(width="100%"))
        self.fill_on_select = W.Checkbox(value=True, description="fill prompt on select", indent=False)
        self.rerun = W.Button(description="Re-run", icon="redo", disabled=True)
        self.to_prompt = W.Button(description="To prompt", icon="arrow-up", disabled=True)
        self.compare = W.Button(description="Compare", icon="columns", disabled=True)
        self.image = image_widget(160)
        self.details = W.HTML()
        self.actions = ImageActions()      # Save, Copy parameters, Send to ... for the selected run
        self.comparison = W.HTML()
        self.scores = ScorePlotPanel(session)     # mean score vs a parameter, with error bars
        self._select_listeners, self._rerun_listeners = [], []
        self._thumbs: dict = {}
        self._refreshing = False
        self.observe(self.select, self._selected)
        self.on_click(self.rerun, self._rerun_clicked)
        self.on_click(self.to_prompt, self._to_prompt_clicked)
        self.on_click(self.compare, self._compare_clicked)
        self.root = W.VBox([self.table, self.select,
                            W.HBox([self.rerun, self.to_prompt, self.compare, self.fill_on_select]),
                            W.HBox([self.image, self.details]), self.actions.root, self.comparison,
                            W.Accordion(children=[self.scores.root], titles=("Scores",))])
        self.refresh()

    def on_select(self, callback) -> None:
        self._select_listeners.append(callback)

    def on_rerun(self, callback) -> None:
        self._rerun_listeners.append(callback)

    # ---- the table ---------------------------------------------------------------------------
    def recent(self) -> list[dict]:
        """One record (its first image) per run, newest first."""
        df = self.session.log.df
        if df.empty:
            return []
        firsts = df[df["image_index"] == 0].tail(self.limit).iloc[::-1]
        return firsts.to_dict("records")

    def refresh(self) -> None:
        """Re-read the log (any thread); keeps the selection."""
        self.session.log.refresh()
        rows = self.recent()
        kept = tuple(self.select.value)
        options = [(label(r), r["run_id"]) for r in rows]
        self._refreshing = True
        try:
            with self.select.hold_sync():
                self.select.options = options
                self.select.value = tuple(v for v in kept if v in {o[1] for o in options})
            self.table.value = self._table_html(rows)
            shown = set(self._thumbs) & {self._thumb_key(r) for r in rows}
            self._thumbs = {k: self._thumbs[k] for k in shown}     # only the rows on show: no growth over a session
        finally:
            self._refreshing = False
        self.scores.refresh()

    def _thumb_key(self, record):
        try:
            return self.session.log.image_file(record)
        except ValueError:
            return None

    def _thumb(self, record) -> str:
        try:
            path = self.session.log.image_file(record)   # refuses a path outside the log folder
        except ValueError:
            return "⚠"
        if path is None:
            return ""
        if path not in self._thumbs:
            from PIL import Image

            try:
                with Image.open(path) as im:
                    self._thumbs[path] = data_url(im.convert("RGB").resize((THUMB, THUMB), Image.NEAREST))
            except (OSError, Image.DecompressionBombError):
                return ""
        return f'<img src="{self._thumbs[path]}" width="{THUMB}" style="image-rendering:pixelated"/>'

    def _table_html(self, rows) -> str:
        if not rows:
            return message("no runs in the log yet")
        head = "".join(f"<th>{h}</th>" for h in ("", "prompt", "seed", "sampler", "steps", "CFG", "LoRAs", "time",
                                                 "s", "status"))
        body = ""
        for r in rows:
            # every value comes from a file someone may have crafted: escape all of it
            cells = [shorten(str(r["prompt"] or ""), 40), r["seed"], r["scheduler"], r["steps"],
                     _num(r["guidance_scale"], "g"), _loras(r.get("loras")), r["created"].strftime("%H:%M:%S"),
                     _num(r["duration_s"], ".2f"), r["status"]]
            body += f"<tr><td>{self._thumb(r)}</td>" + "".join(
                f"<td>{html.escape(str(c if c is not None else ''))}</td>" for c in cells) + "</tr>"
        return (f'<table class="sdw-log" style="font-size:11px;border-collapse:collapse"><tr>{head}</tr>'
                f"{body}</table>")

    # ---- handlers --------------------------------------------------------------------------
    def _selected(self, change) -> None:
        chosen = change["new"]
        self.rerun.disabled = self.to_prompt.disabled = len(chosen) != 1
        self.compare.disabled = len(chosen) < 2
        if len(chosen) == 1:
            self._show(chosen[0])
        if len(chosen) == 1 and self.fill_on_select.value and not self._refreshing:
            self._send(chosen[0])

    def _show(self, run_id: str) -> None:
        try:
            record = self.session.log.records(run_id)[0]
            images = self.session.log.images(run_id)
        except (KeyError, OSError, ValueError) as exc:
            self.details.value = message(short_error(exc), "error")
            return
        if images:
            self.image.value = image_value(images[0], 160)
        rows = [r for r in self.session.log.records(run_id) if r["image_path"]]
        self.actions.show(images, [self.session.log.dir / r["image_path"] for r in rows], [r["seed"] for r in rows],
                          run_id)
        p = record["params"]
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in p.items() if v not in (None, "", [], {}) and k != "init_image_sha256")
        self.details.value = f'<table style="font-size:11px">{rows}</table>'

    def _send(self, run_id: str) -> None:
        try:
            params = self.session.log.params(run_id)
        except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
            self.details.value = message(short_error(exc), "error")
            return
        for callback in list(self._select_listeners):
            callback(params)

    def _to_prompt_clicked(self, _button) -> None:
        if len(self.select.value) == 1:
            self._send(self.select.value[0])

    def _rerun_clicked(self, _button) -> None:
        if len(self.select.value) == 1:
            for callback in list(self._rerun_listeners):
                callback(self.select.value[0])

    def _compare_clicked(self, _button) -> None:
        try:
            self.comparison.value = self.session.log.compare(list(self.select.value))._repr_html_()
        except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
            self.comparison.value = message(short_error(exc), "error")

    def close(self) -> None:
        self.actions.close()
        self.scores.close()
        self._select_listeners.clear()
        self._rerun_listeners.clear()
        super().close()


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else ""


def _loras(text) -> str:
    try:
        loras = json.loads(text or "{}")
        return ", ".join(f"{k}:{_num(v, 'g')}" for k, v in loras.items())
    except (ValueError, AttributeError):
        return "?"


def label(record: dict) -> str:
    return (f'{record["created"].strftime("%H:%M:%S")} · seed {record["seed"]} · {record["scheduler"]} · '
            f'{record["steps"]} steps · CFG {_num(record["guidance_scale"], "g")} · {shorten(str(record["prompt"] or ""), 50)}')
