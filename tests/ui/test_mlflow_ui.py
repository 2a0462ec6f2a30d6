"""The MLflow UI a user opens after a sweep, in a real browser: the printed links open a ready
runs view (the sweep's jobs, the columns that decide, the charts) and the parent's description.

A real sweep into a SQLite store, ``mlflow ui`` on it (127.0.0.1, a free port), and headless
Debian Chromium driven by Playwright (which cannot download its own browsers here). Without
``/usr/bin/chromium`` the test installs it with apt-get when it runs as root, else it skips,
saying why. Screenshots are left in the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cluster.postgres_server import TrackingServer, free_port, stop_tracking_server, wait_for_health
from sweep_testing import mlflow_client, run_cli

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
UI_START_SECONDS = 120
PAGE_SECONDS = 90  # the first search of a cold UI on a busy 2-core machine
VIEWPORT = {"width": 1920, "height": 1080}


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"no {CHROMIUM}, and not root with apt-get to install it: apt-get install -y chromium")
        done = subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0 or not Path(CHROMIUM).exists():
            pytest.skip(f"apt-get install -y chromium failed: {done.stderr[-1000:]}")
    return CHROMIUM


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shared_cache):
    """The README's default sweep (12 jobs: fp32, fp16, int8 x iOS15-18; int8 at iOS15 is
    skipped) into ``<workdir>/outputs/mlflow.db``; its stdout."""
    workdir = tmp_path_factory.mktemp("ui-sweep")
    outputs = workdir / "outputs"
    result = run_cli(["precision-sweep", "sweep=default", f"paths.cache={shared_cache}"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return outputs, result.stdout


@pytest.fixture(scope="module")
def ui(sweep, tmp_path_factory):
    """``mlflow ui`` on the sweep's store, as the sweep's links say, on a free port: its base URL."""
    outputs, _ = sweep
    port, log = free_port(), tmp_path_factory.mktemp("ui") / "mlflow-ui.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{outputs / 'mlflow.db'}",
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        # Its own process group: the server's workers stop with it.
        process = subprocess.Popen(command, cwd=outputs, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = TrackingServer(uri=f"http://127.0.0.1:{port}", backend_uri=f"sqlite:///{outputs / 'mlflow.db'}",
                            artifacts=outputs, log=log)
    try:
        wait_for_health(server, process, UI_START_SECONDS)
        yield server.uri
    finally:
        stop_tracking_server(process)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser.new_page(viewport=VIEWPORT)
        finally:
            browser.close()


def _link(stdout: str, label: str, base: str) -> str:
    """The link printed after ``label:``, on the test's UI instead of the default port."""
    match = re.search(rf"^\s*{label}:\s+(http://127\.0\.0\.1:5000/\S+)$", stdout, re.MULTILINE)
    assert match, f"no '{label}:' link in the sweep's output:\n{stdout[-2000:]}"
    return base + match.group(1).removeprefix("http://127.0.0.1:5000")


def _header_in_view(page, col_id: str) -> bool:
    """The column's header is on screen and is what a user sees there (not under a panel)."""
    return page.evaluate(
        """colId => {
            const cell = [...document.querySelectorAll('.ag-header-cell')].find(c => c.getAttribute('col-id') === colId);
            if (!cell) return false;
            const box = cell.getBoundingClientRect();
            const x = box.left + box.width / 2, y = box.top + box.height / 2;
            if (box.width < 20 || x < 0 || y < 0 || x > innerWidth || y > innerHeight) return false;
            return cell.contains(document.elementFromPoint(x, y));
        }""",
        col_id,
    )


def test_the_printed_links_open_a_ready_runs_view_and_the_pick(sweep, ui, page, tmp_path):
    outputs, stdout = sweep
    client = mlflow_client(outputs)
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 12
    (picked,) = [c for c in children if c.data.tags.get("pick") == "true"]

    runs_view = _link(stdout, "runs view", ui)
    assert "workflowType=machine_learning" in runs_view and "viewStateShareKey=" in runs_view
    page.goto(runs_view)
    for child in children:  # listed without expanding the parent
        page.get_by_role("link", name=child.info.run_name).wait_for(timeout=PAGE_SECONDS * 1000)
    page.wait_for_timeout(1000)  # column widths are applied once the grid is ready
    page.screenshot(path=tmp_path / "runs_view.png")
    assert "/runs" in page.url and "/traces" not in page.url
    assert page.get_by_text("12 matching runs").is_visible()
    assert page.get_by_role("link", name=parent.info.run_name).count() == 0, "the view shows the jobs, not the sweeps"
    for col_id in ("metrics.`delta_pp`", "metrics.`size_kb`", "tags.`pick`", "params.`precision`", "params.`target`"):
        assert _header_in_view(page, col_id), f"column {col_id} is not on screen without scrolling"
    cells = page.locator('.ag-center-cols-container [col-id="metrics.`size_kb`"]').all_inner_texts()
    sizes = [float(t) for t in cells if t.strip() not in ("", "-")]  # the skipped job has no size
    assert sizes == sorted(sizes) and len(sizes) == 11, "evaluated jobs sorted by size, smallest first"
    picked_row = page.locator(".ag-center-cols-container .ag-row").filter(has=page.locator('[col-id="tags.`pick`"]', has_text="true"))
    assert picked_row.count() == 1
    assert picked_row.locator('[col-id="params.`precision`"]').inner_text() == picked.data.params["precision"]

    page.goto(_link(stdout, "charts", ui))
    page.get_by_text("size_kb vs. delta_pp").wait_for(timeout=PAGE_SECONDS * 1000)
    page.get_by_text("Parallel Coordinates").wait_for(timeout=PAGE_SECONDS * 1000)
    page.wait_for_timeout(1000)
    page.screenshot(path=tmp_path / "charts.png")

    page.goto(_link(stdout, "this sweep", ui))
    pick_link = page.get_by_role("link", name=f"{picked.data.params['precision']} at {picked.data.params['target']}")
    pick_link.first.wait_for(timeout=PAGE_SECONDS * 1000)
    page.screenshot(path=tmp_path / "parent_run.png")
    assert page.get_by_text("Pick:").first.is_visible()
    assert picked.info.run_id in (pick_link.first.get_attribute("href") or "")
