"""The Dagster UI in a real headless browser: lineage and the paradox report, as a researcher sees them.

Needs Debian's chromium (apt install chromium) and the playwright package; no browser is downloaded.
CI sets QUP_REQUIRE_BROWSER=1 so a missing browser fails instead of skipping. The README's screenshots
come from the same code on the default study: `make study`, then
`.venv/bin/python -m qup_assets_tests.test_ui_browser`.
"""

import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from qup_assets_tests.helpers import free_port, wait_until_serving

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        if os.environ.get("QUP_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install -y chromium) and QUP_REQUIRE_BROWSER is set")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def _shot(page, path: Path):
    """Screenshot once the page settles. dagster.yaml turns the community dialog off (`nux: enabled: false`);
    it used to appear a few seconds after the first load, so wait past that and check it stays away."""
    page.wait_for_timeout(4000)
    assert page.get_by_text("Join the Dagster community").count() == 0, "the community dialog is over the page"
    page.screenshot(path=str(path))


@contextmanager
def ui_page(server: list[str], port: int, env: dict, log: Path, what: str):
    """Start a UI server (`server` argv, serving on `port`), wait until it answers, and yield (url, a page of
    Debian's chromium); stop the browser and the server's whole process group afterwards."""
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(server, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_until_serving(url + "/server_info", proc, log, 180, what)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                yield url, browser.new_page(viewport={"width": 1600, "height": 1000})
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def browse(study: str, study_file: Path, store_root: Path, home: Path, shots: Path, k: int, log: Path) -> None:
    """Open the UI on an instance where `study` is materialized; check lineage and the report; take the shots."""
    port = free_port()
    env = dict(os.environ, QUP_STUDY=str(study_file), QUP_STORE=str(store_root), DAGSTER_HOME=str(home))
    shots.mkdir(parents=True, exist_ok=True)
    server = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w",
              str(REPO / "workspace.yaml")]
    with ui_page(server, port, env, log, "the webserver") as (url, page):
        # Lineage: the students group with its neighbours, every node a real asset of this study, in the
        # study's own code location.
        page.goto(f"{url}/locations/{study}/asset-groups/students/lineage")
        page.wait_for_selector("text=native_traces", timeout=90_000)
        for node in ["base_model", "native_samples", "native_traces", "common_problems", "base_eval"]:
            assert page.get_by_text(node, exact=True).count() >= 1, node
        _shot(page, shots / "lineage_students.png")

        # The report asset: the generated verdict and Table 1 rendered from the metadata.
        page.goto(f"{url}/assets/{study}/paradox_report")
        page.wait_for_selector("text=Spearman rho", timeout=90_000)
        _shot(page, shots / "paradox_report.png")
        table = page.locator("table", has_text="Oracle-Synthesized").first
        assert table.count() == 1
        assert "Style-Aligned" in table.inner_text() and f"Avg@{k} DFT" in table.inner_text()
        table.scroll_into_view_if_needed()
        _shot(page, shots / "paradox_report_table.png")
    for name in ["lineage_students.png", "paradox_report.png", "paradox_report_table.png"]:
        assert (shots / name).stat().st_size > 20_000, name  # a rendered page, not a blank one


@pytest.mark.slow
def test_ui_shows_lineage_and_the_report_in_a_browser(micro_study, tmp_path):
    browse("micro", micro_study.study, micro_study.store_root, micro_study.home, tmp_path / "shots", k=2,
           log=tmp_path / "webserver.log")


NEW_FAMILY = ("  micro-mini:\n    student: {kind: synthetic, architecture: llama, style: llama, hidden_size: 64, "
              "num_layers: 2, pretrain_problems: 1000, pretrain_steps: 120}\n")


@pytest.mark.slow
def test_a_new_family_launched_from_the_ui_lands_and_refreshes_the_report(micro_study, tmp_path, monkeypatch):
    """What a researcher does in the UI: a family added to the study file, then Jobs, family_assets,
    Materialize all, the Missing partitions, Launch 1 run; the run lands, the report refreshes itself."""
    import re
    import time

    import dagster as dg
    import pandas as pd

    from qup_assets.cli import main

    ms = micro_study.copy(tmp_path / "ui-backfill").env(monkeypatch)
    ms.study.write_text(ms.study.read_text().replace("families:\n", "families:\n" + NEW_FAMILY))
    assert main(["families", "sync", "--study", str(ms.study)]) == 0
    instance = dg.DagsterInstance.get()
    report_before = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["micro", "paradox_report"])), limit=1).records[0]
    env = dict(os.environ, QUP_STUDY=str(ms.study))
    ws = subprocess.run([sys.executable, "-m", "qup_assets.cli", "workspace", "--study", str(ms.study)], env=env,
                        check=True, capture_output=True, text=True).stdout.strip()
    port = free_port()
    server = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", ws]
    with ui_page(server, port, env, tmp_path / "dev.log", "dagster dev") as (url, page):
        page.goto(f"{url}/locations/micro/jobs/family_assets")
        page.get_by_role("button", name="Materialize all").click(timeout=90_000)
        page.get_by_role("button", name="Missing", exact=True).click()
        page.wait_for_timeout(2000)
        page.screenshot(path=str(tmp_path / "dialog.png"))
        dialog = page.get_by_role("dialog").inner_text()
        assert re.search(r"\b1 partitions?\b", dialog), dialog  # only the new family is missing
        page.get_by_role("button", name="Launch 1 run").click()  # one partition: a run ("Launch backfill" for more)
        deadline = time.monotonic() + 1200
        mine = dg.RunsFilter(tags={"dagster/partition": "micro-mini"})
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=mine)
            if runs and runs[0].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                break
            time.sleep(5)
        (run,) = instance.get_runs(filters=mine)
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "family_assets"
        page.goto(f"{url}/runs/{run.run_id}")
        page.get_by_text("Success").first.wait_for(timeout=60_000)
        rows = pd.read_parquet(ms.store / "tables" / "native_eval" / "micro-mini.parquet")
        assert len(rows) and (rows["model_family"] == "micro-mini").all()
        while time.monotonic() < deadline:  # the report's automation condition refreshes it
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(["micro", "paradox_report"])), limit=1).records[0]
            if latest.storage_id != report_before.storage_id:
                break
            time.sleep(5)
        assert latest.storage_id != report_before.storage_id, "the report was not refreshed"
        t1 = pd.read_csv(ms.store / "report" / "table1.csv")
        assert set(t1["model_family"]) == {"micro-qwen", "micro-mini"}
        runs = len(instance.get_runs())
        assert main(["run", "--study", str(ms.study)]) == 0
        assert len(instance.get_runs()) == runs  # and qup run agrees: nothing is left to do


if __name__ == "__main__":
    # The README's screenshots, from the default study after `make study`:
    #   .venv/bin/python -m qup_assets_tests.test_ui_browser
    from qup_assets.study import load_study, resolve_study_path, store_root

    default = load_study("tiny")
    home = Path(os.environ.get("DAGSTER_HOME") or REPO / ".dagster_home")
    browse(default.name, resolve_study_path("tiny"), store_root(), home, REPO / "docs" / "screenshots",
           k=default.evaluation.k, log=Path("/tmp/qup-webserver.log"))
    print(f"screenshots written to {REPO / 'docs' / 'screenshots'}")
