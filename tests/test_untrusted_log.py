"""A log folder from someone else is data, never code: crafted records, bad lines, paths, concurrency.

Each test is the attack or the fault itself, and checks both the clear error and that nothing
was run, lost or read from outside the folder.
"""
import json
import subprocess
import sys
import textwrap
import warnings

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image

import sdwidgets as sdw
from sdwidgets.log import ExperimentLog


@pytest.fixture
def ip(session):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sdwidgets")
    names = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - names:
        del shell.user_ns[name]


def one_real_record(session, **generate):
    run = session.generate("a red circle", seed=3, steps=2, **generate)
    return run, json.loads(session.log.path.read_text().splitlines()[-1])


def append_line(log, line: bytes | str) -> None:
    with open(log.path, "ab") as f:
        f.write(line if isinstance(line, bytes) else line.encode())


def crafted(record: dict, **changes) -> str:
    return json.dumps({**record, **changes}) + "\n"


def test_rerun_never_evaluates_a_crafted_template(ip, session, tmp_path):
    _, record = one_real_record(session)
    marker = tmp_path / "PWNED"
    template = "a {color} circle {__import__('pathlib').Path(%r).touch()}" % str(marker)
    append_line(session.log, crafted(record, run_id="crafted-1", prompt_template=template,
                                     template_values=json.dumps({"color": "red"})))
    for attack in (template, "a {color.__class__} circle", "a {color!r} circle", "a {color:>{width}} circle"):
        append_line(session.log, crafted(record, run_id="crafted-2", prompt_template=attack,
                                         template_values=json.dumps({"color": "red", "width": 9})))
        session.log.refresh()
        before = len(session.log)
        for run_id in ("crafted-1", "crafted-2"):
            with pytest.raises(UsageError, match="not a plain"):
                ip.run_line_magic("sd", f"rerun {run_id} color=green")
        assert not marker.exists() and len(session.log) == before      # nothing ran, nothing logged


def test_rerun_fills_plain_fields_from_the_record_not_the_notebook(ip, session):
    _, record = one_real_record(session)
    append_line(session.log, crafted(record, run_id="plain-1", prompt_template="a {color} {shape}",
                                     template_values=json.dumps({"color": "red", "shape": "circle"})))
    session.log.refresh()
    ip.user_ns["shape"] = "SQUARE-FROM-NOTEBOOK"
    with capture_output():
        ip.run_line_magic("sd", "rerun plain-1 color=green")
    row = session.log.df.iloc[-1]
    assert row.prompt == "a green circle" and json.loads(row.template_values) == {"color": "green", "shape": "circle"}


def test_log_browser_and_compare_escape_every_value(session):
    from sdwidgets.widgets.logbrowser import LogPanel

    run, record = one_real_record(session)
    evil = "<script>alert(1)</script>"
    params = {**record["params"], "<img src=x onerror=alert(2)>": 1}
    append_line(session.log, crafted(record, run_id="evil-1", scheduler=evil, status=evil, model=evil,
                                     prompt=evil, loras=json.dumps({evil: 1.0}), params=params))
    panel = LogPanel(session)
    try:
        assert "<script" not in panel.table.value and "&lt;script&gt;" in panel.table.value
        panel._show("evil-1")
        assert "<img src=x" not in panel.details.value and "&lt;img src=x" in panel.details.value
        page = session.log.compare([run.run_id, "evil-1"])._repr_html_()
        assert "<script" not in page and "&lt;script&gt;" in page
    finally:
        panel.close()


def test_an_image_path_outside_the_log_folder_is_refused(session, tmp_path):
    from sdwidgets.widgets.logbrowser import LogPanel

    _, record = one_real_record(session)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    (session.log.dir / "images" / "link.png").symlink_to(secret)
    for i, path in enumerate([str(secret), "../secret.png", "images/../../secret.png", "images/link.png"]):
        append_line(session.log, crafted(record, run_id=f"outside-{i}", image_path=path))
    session.log.refresh()
    for i in range(4):
        with pytest.raises(ValueError, match="outside the log folder"):
            session.log.images(f"outside-{i}")
    panel = LogPanel(session)
    try:
        assert panel.table.value.count("<img") == 1          # only the real run's thumbnail
    finally:
        panel.close()


BAD_LINES = [b"\xff\xfe\x00 not utf-8\n", b"null\n", b"42\n", b"{}\n", b"[1, 2]\n", b'"text"\n', b"{not json\n"]


def test_bad_lines_cost_only_themselves(session, model, ip):
    a, record = one_real_record(session)
    for line in BAD_LINES:
        append_line(session.log, line)
    for changes in ({"created": "yesterday"}, {"created": None}, {"seed": "1; rm -rf /"}, {"image_index": -1},
                    {"params": "x"}, {"guidance_scale": "NaN"}):
        append_line(session.log, crafted(record, run_id="bad-" + next(iter(changes)), **changes))
    for key in ("run_id", "params", "created", "image_index"):
        append_line(session.log, json.dumps({k: v for k, v in record.items() if k != key}) + "\n")
    append_line(session.log, crafted(record, guidance_scale=float("nan"), run_id="nan-1"))
    b = session.generate("a blue square", seed=4, steps=2)      # a good record after the bad ones
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reopened = sdw.Session(log_dir=session.log.dir, model=model, progress=False)
    damaged = [w for w in caught if "damaged record" in str(w.message)]
    assert len(damaged) == len(BAD_LINES) + 6 + 4 + 1
    assert list(reopened.log.df["run_id"]) == [a.run_id, b.run_id]
    assert set(reopened.log.compare([a.run_id, b.run_id]).differing) >= {"prompt", "seed"}
    assert reopened.log.rerun(a.run_id).images
    sdw.set_session(reopened)
    with capture_output():
        assert len(ip.run_line_magic("sd", "log")) == 3
        ip.run_line_magic("sd", f"rerun {b.run_id}")
    assert len(reopened.log) == 4


def test_damaged_params_in_a_record_are_a_clear_error(session, ip):
    _, record = one_real_record(session)
    append_line(session.log, crafted(record, run_id="broken-params", params={"prompt": 5, "steps": "many"}))
    append_line(session.log, crafted(record, run_id="broken-controls",
                                     params={**record["params"], "controls": [{"kind": "canny"}]}))
    session.log.refresh()
    before = len(session.log)
    for run_id in ("broken-params", "broken-controls"):
        with pytest.raises(UsageError, match=f"run {run_id}: its logged parameters"):
            ip.run_line_magic("sd", f"rerun {run_id}")
    assert len(session.log) == before


WRITER = textwrap.dedent("""
    import datetime, sys
    from sdwidgets.log import COLUMNS, ExperimentLog
    log = ExperimentLog(sys.argv[1])
    created = datetime.datetime.now(datetime.timezone.utc).isoformat()
    for n in range(int(sys.argv[2])):
        rows = [{**dict.fromkeys(COLUMNS), "run_id": f"w-{n}", "image_index": i, "created": created,
                 "params": {"prompt": "x" * 12000}, "prompt": "y" * 12000} for i in range(4)]
        log._append(rows)      # the real writer: one O_APPEND write of ~100 kB per run
""")


def test_a_reader_never_drops_a_record_another_process_is_appending(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    runs = 150
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(runs)])
    reader = ExperimentLog(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while writer.poll() is None:
            reader.refresh()
        reader.refresh()
    assert writer.returncode == 0
    assert [str(w.message) for w in caught] == []
    assert len(reader) == runs * 4
    assert list(dict.fromkeys(r["run_id"] for r in reader._records)) == [f"w-{n}" for n in range(runs)]


def test_a_torn_last_line_is_skipped_once_and_then_read_as_damaged(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "records.jsonl").write_bytes(b'{"run_id": "crashed-mid-wr')
    with pytest.warns(UserWarning, match="torn last record"):
        log = ExperimentLog(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log.refresh()                      # the same torn line is not reported again
    assert len(log) == 0 and (folder / "records.jsonl").read_bytes() == b'{"run_id": "crashed-mid-wr'
