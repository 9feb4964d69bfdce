"""End to end: the dashboard in a real JupyterLab, in Debian's chromium (headless), driven by Playwright.

Starts JupyterLab on 127.0.0.1 with a temporary root, opens a notebook that shows the dashboard,
runs it, clicks Generate, waits for the final image (set from the worker thread, so this also
checks that widget updates from a thread reach the browser) and saves a screenshot to
test-artifacts/dashboard.png (copied to docs/dashboard.png for the README with SDW_UPDATE_DOCS=1).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_support import (
    chromium_page,
    dismiss_news,
    jupyterlab,
    keep,
    missing,
    open_and_run_notebook,
    write_notebook,
)
from conftest import EMBEDDED_READY

ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


def test_dashboard_generates_in_a_real_browser(tmp_path, model):
    from playwright.sync_api import expect

    root = tmp_path / "lab"
    root.mkdir()
    model_arg = "" if EMBEDDED_READY else f", model={model!r}"
    write_notebook(root / "dashboard.ipynb", "\n".join([
        "import sdwidgets as sdw",
        f"session = sdw.Session(log_dir={str(tmp_path / 'runs')!r}{model_arg})",
        "dashboard = sdw.Dashboard(session=session, steps=20)",
        "dashboard",
    ]))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    with jupyterlab(root) as url, chromium_page() as page:
        try:
            open_and_run_notebook(page, url, "dashboard.ipynb")
            dashboard = page.locator(".sdw-dashboard")
            dashboard.wait_for(timeout=90_000)
            images = dashboard.get_by_label("Images")
            images.fill("4")
            images.press("Enter")
            generate = page.get_by_role("button", name="Generate")
            # count the live preview's updates as the browser receives them (sent from the worker thread)
            page.evaluate("""() => {
                const img = document.querySelector('.sdw-live-image');
                window.sdwFrames = 0;
                new MutationObserver(() => { window.sdwFrames += 1; })
                    .observe(img, {attributes: true, attributeFilter: ['src']});
            }""")
            generate.click()
            # the final image arrives in the gallery (a trait set on the worker thread)
            page.wait_for_selector(".sdw-gallery img", timeout=90_000)
            assert dashboard.locator(".sdw-gallery img").count() == 4
            page.wait_for_selector("text=steps/s", timeout=10_000)
            expect(generate).to_be_enabled(timeout=30_000)        # re-enabled when the run is over
            frames = page.evaluate("window.sdwFrames")
            assert frames >= 2, f"the live preview changed {frames} times in the browser"
            print(f"live preview updates seen by the browser: {frames}")
            assert page.get_by_text("seed 1", exact=False).count() > 0
            # the step scrubber: Play drives the slider in the browser (jslink), the kernel renders each step
            info = dashboard.locator(".sdw-scrubber-info")
            last = info.inner_text()
            handle = dashboard.locator(".sdw-scrubber .noUi-handle").first
            assert handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax") != "0"
            dashboard.locator(".sdw-scrubber .widget-play button").first.click()
            page.wait_for_function("([el, last]) => el.innerText !== last", arg=[info.element_handle(), last],
                                   timeout=20_000)
            page.wait_for_function("([el, last]) => el.innerText === last", arg=[info.element_handle(), last],
                                   timeout=30_000)
            dismiss_news(page)
            page.wait_for_timeout(300)
        finally:
            page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))
        dashboard.screenshot(path=str(shot))
    if os.environ.get("SDW_UPDATE_DOCS"):      # refresh the README's screenshot only when asked
        keep(shot, ROOT / "docs" / "dashboard.png")
    assert shot.stat().st_size > 10_000
