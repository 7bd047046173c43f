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

from qup_assets_tests.helpers import assert_same, free_port, results_of, wait_until_serving, with_second_family

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        if os.environ.get("QUP_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install -y chromium) and QUP_REQUIRE_BROWSER is set")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def _shot(page, path: Path, dialog=None):
    """Screenshot once the page settles. dagster.yaml turns the community dialog off (`nux: enabled: false`);
    it used to appear a few seconds after the first load, so wait past that and check it stays away. With
    `dialog` (a Markdown value the UI opened in a dialog), the dialog alone, not the dimmed page behind it."""
    page.wait_for_timeout(4000)
    assert page.get_by_text("Join the Dagster community").count() == 0, "the community dialog is over the page"
    (dialog or page).screenshot(path=str(path))


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


def show_markdown(page, key: str):
    """Open a metadata entry's Markdown when the UI folds it behind "[Show Markdown]" (long values); the
    dialog it opened, or None when the value is shown inline."""
    row = page.locator("tr", has=page.get_by_text(key, exact=True)).first
    link = row.get_by_text("[Show Markdown]")
    if not link.count():
        return None
    link.first.click()
    page.wait_for_selector("[role=dialog]", timeout=30_000)
    return page.get_by_role("dialog").first


def browse(study: str, study_file: Path, store_root: Path, home: Path, shots: Path, k: int, log: Path) -> None:
    """Open the UI on an instance where `study` is materialized; check lineage and the report; take the shots."""
    port = free_port()
    env = dict(os.environ, QUP_STUDY=str(study_file), QUP_STORE=str(store_root), DAGSTER_HOME=str(home))
    shots.mkdir(parents=True, exist_ok=True)
    server = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w",
              str(REPO / "workspace.yaml")]
    with ui_page(server, port, env, log, "the webserver") as (url, page):
        # Lineage of one variant's group (five assets and their neighbours: readable at a glance, where the
        # students group, which feeds every variant, is a cloud of edges), in the study's own code location.
        page.goto(f"{url}/locations/{study}/asset-groups/style_aligned/lineage")
        page.wait_for_selector("text=style_aligned_traces", timeout=90_000)
        for stage in ["traces", "rewards", "adaptation", "checkpoints", "eval"]:
            assert page.get_by_text(f"style_aligned_{stage}", exact=True).count() >= 1, stage
        _shot(page, shots / "lineage_style_aligned.png")

        # The report asset: the finding in one line (plain text, inline), the generated verdict, Table 1 and the
        # paired comparisons as forest plots, rendered from the metadata.
        page.goto(f"{url}/assets/{study}/paradox_report")
        page.wait_for_selector("text=report_html", timeout=90_000)
        headline = page.locator("tr", has=page.get_by_text("headline", exact=True)).first.inner_text()
        assert "rho(reward, accuracy)" in headline and "rho(PPL, accuracy)" in headline, headline
        dialog = show_markdown(page, "verdict")  # a long Markdown value opens in a dialog; a short one is inline
        page.wait_for_selector("text=Spearman rho", timeout=90_000)
        _shot(page, shots / "paradox_report.png", dialog)
        page.keyboard.press("Escape")
        dialog = show_markdown(page, "table1")
        table = page.locator("table", has_text="Oracle-Synthesized").first
        assert table.count() == 1
        assert "Style-Aligned" in table.inner_text() and f"Avg@{k} DFT" in table.inner_text()
        table.scroll_into_view_if_needed()
        _shot(page, shots / "paradox_report_table.png", dialog)
        page.keyboard.press("Escape")
        dialog = show_markdown(page, "comparisons")
        plots = (dialog or page).locator("img[alt*='minus']")
        plots.first.wait_for(timeout=30_000)
        assert plots.count() >= 2  # Style-Aligned against the others, SLM-RFT against the base (and selection)
        _shot(page, shots / "paradox_report_comparisons.png", dialog)
        page.keyboard.press("Escape")

        # The study's health as asset checks, on the asset they judge: each run's result in the check's history
        # (with several families the latest materialization may be another family's, which the Overview tab
        # shows as "Not evaluated").
        page.goto(f"{url}/assets/{study}/style_aligned_traces?view=checks")
        page.get_by_text("This is a non-blocking asset check").first.wait_for(timeout=90_000)
        assert page.get_by_text("few_wrong_steps_behind_right_answers").count() >= 1
        page.get_by_text("Execution history").first.click()
        page.get_by_text("of the verified-correct native traces").first.wait_for(timeout=60_000)
        _shot(page, shots / "health_checks.png")

        # Every column explains itself; a score says which columns it was computed from.
        page.goto(f"{url}/assets/{study}/native_eval")
        page.get_by_text("Avg@k: mean accuracy over the benchmark's items").first.wait_for(timeout=90_000)
        page.goto(f"{url}/assets/{study}/native_rewards?view=events")
        page.get_by_text("column_lineage", exact=True).first.wait_for(timeout=90_000)
        row = page.locator("tr", has=page.get_by_text("column_lineage", exact=True)).first.inner_text()
        assert "native_traces.completion" in row, row
    for name in ["lineage_style_aligned.png", "paradox_report.png", "paradox_report_table.png",
                 "paradox_report_comparisons.png", "health_checks.png"]:
        assert (shots / name).stat().st_size > 20_000, name  # a rendered page, not a blank one


@pytest.mark.slow
def test_ui_shows_lineage_and_the_report_in_a_browser(micro_study, tmp_path):
    browse("micro", micro_study.study, micro_study.store_root, micro_study.home, tmp_path / "shots", k=2,
           log=tmp_path / "webserver.log")


@pytest.mark.slow
def test_a_backfill_launched_from_the_ui_adds_a_family_and_refreshes_the_report(micro_study, tmp_path, monkeypatch):
    """What a researcher does in the UI: a family added to the study file, then Jobs, family_assets,
    Materialize all, All partitions (the new family and micro-qwen), Launch backfill. The backfill shows up
    under Backfills, both runs land, micro-qwen's tables come out unchanged, the report refreshes itself."""
    import re
    import time

    import dagster as dg
    import pandas as pd

    from qup_assets.cli import main

    ms = micro_study.copy(tmp_path / "ui-backfill").env(monkeypatch)
    ms.study.write_text(with_second_family(ms.study.read_text()))  # micro-llama, a shipped student
    assert main(["families", "sync", "--study", str(ms.study)]) == 0
    qwen = lambda: {k: v for k, v in results_of(ms.store_root, "micro").items() if "micro-qwen" in k}  # noqa: E731
    qwen_before = qwen()
    assert len(qwen_before) > 20
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
        page.get_by_role("button", name="All", exact=True).click()
        page.wait_for_timeout(2000)
        page.screenshot(path=str(tmp_path / "dialog.png"))
        dialog = page.get_by_role("dialog").inner_text()
        assert re.search(r"\b2 partitions\b", dialog), dialog  # micro-qwen and the new micro-llama
        page.get_by_role("button", name="Launch backfill").click()
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline and not instance.get_backfills():
            time.sleep(1)
        (backfill,) = instance.get_backfills()
        page.goto(f"{url}/runs/b/{backfill.backfill_id}")
        page.get_by_text(backfill.backfill_id).first.wait_for(timeout=60_000)  # the UI lists it as a backfill
        mine = dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id})
        done = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=mine)
            if len(runs) == 2 and all(r.status in done for r in runs):
                break
            time.sleep(1)
        runs = instance.get_runs(filters=mine)
        assert {r.tags["dagster/partition"]: r.status for r in runs} == {
            "micro-qwen": dg.DagsterRunStatus.SUCCESS, "micro-llama": dg.DagsterRunStatus.SUCCESS}
        assert {r.job_name for r in runs} == {"family_assets"}
        rows = pd.read_parquet(ms.store / "tables" / "native_eval" / "micro-llama.parquet")
        assert len(rows) and (rows["model_family"] == "micro-llama").all()
        assert_same(qwen(), qwen_before)  # micro-qwen re-materialized from the cache: the same numbers
        while time.monotonic() < deadline:  # the report's automation condition refreshes it
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(["micro", "paradox_report"])), limit=1).records[0]
            if latest.storage_id != report_before.storage_id:
                break
            time.sleep(1)
        assert latest.storage_id != report_before.storage_id, "the report was not refreshed"
        t1 = pd.read_csv(ms.store / "report" / "table1.csv")
        assert set(t1["model_family"]) == {"micro-qwen", "micro-llama"}
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
