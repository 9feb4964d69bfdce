"""A real JupyterLab on 127.0.0.1 (temporary root) and a headless Debian chromium driven by Playwright.

Facts this follows (shared/TESTING-NOTES.md): Playwright's own browser download does not work
here, so `executable_path` points at Debian's chromium; a notebook needs kernelspec metadata or
a "Select Kernel" dialog blocks everything.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def missing() -> str | None:
    """Why the browser test cannot run here (None when it can)."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} not found (apt-get install -y chromium)"
    for module in ("playwright", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, *sources: str) -> Path:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate(sources)]
    nb = {"cells": cells, "metadata": {"kernelspec": KERNELSPEC}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1))
    return path


@contextlib.contextmanager
def jupyterlab(root: Path, timeout: float = 90):
    """Run `jupyter lab` on a free loopback port with `root` as its root; yields the base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--ServerApp.disable_check_xsrf=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root.parent / "jupyterlab.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/api", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer on {url}/api within {timeout}s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (it shuts its kernels down), then SIGKILL if needed."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1500):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def open_and_run_notebook(page, url: str, name: str, timeout_ms: int = 60_000) -> None:
    """Open a notebook in JupyterLab, wait for an idle kernel, run its first cell."""
    page.goto(f"{url}/lab/tree/{name}?reset", timeout=timeout_ms)
    page.wait_for_selector(".jp-Notebook", timeout=timeout_ms)
    page.wait_for_selector(".jp-StatusBar-TextItem:has-text('Idle'), .jp-Toolbar-kernelStatus[data-status='idle']",
                           timeout=timeout_ms)
    page.locator(".jp-Cell .cm-content").first.click()
    page.keyboard.press("Shift+Enter")


def dismiss_news(page) -> None:
    """Answer JupyterLab's "news?" toast (it covers a corner of the screenshot)."""
    button = page.locator(".Toastify__toast button:has-text('No')")
    if button.count():
        button.first.click()
        page.wait_for_timeout(300)


def keep(screenshot: Path, *copies: Path) -> None:
    for target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target)
