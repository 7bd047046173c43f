"""The Dagster UI in a real headless browser: lineage and the paradox report, as a researcher sees them.

Needs Debian's chromium (apt install chromium) and the playwright package; no browser is downloaded.
CI sets QUP_REQUIRE_BROWSER=1 so a missing browser fails instead of skipping. The README's screenshots
come from the same code on the default study: `make study`, then
`.venv/bin/python -m qup_assets_tests.test_ui_browser`.
"""

import os
import shutil
import subprocess
import sys
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


def browse(study: str, study_file: Path, store_root: Path, home: Path, shots: Path, k: int, log: Path) -> None:
    """Open the UI on an instance where `study` is materialized; check lineage and the report; take the shots."""
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, QUP_STUDY=str(study_file), QUP_STORE=str(store_root), DAGSTER_HOME=str(home))
    out = log.open("wb")
    server = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
                               "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=out, stderr=out)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        wait_until_serving(url + "/server_info", server, log, 180, "the webserver")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})

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
            browser.close()
        for name in ["lineage_students.png", "paradox_report.png", "paradox_report_table.png"]:
            assert (shots / name).stat().st_size > 20_000, name  # a rendered page, not a blank one
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_ui_shows_lineage_and_the_report_in_a_browser(micro_study, tmp_path):
    browse("micro", micro_study.study, micro_study.store_root, micro_study.home, tmp_path / "shots", k=2,
           log=tmp_path / "webserver.log")


if __name__ == "__main__":
    # The README's screenshots, from the default study after `make study`:
    #   .venv/bin/python -m qup_assets_tests.test_ui_browser
    from qup_assets.study import load_study, resolve_study_path, store_root

    default = load_study("tiny")
    home = Path(os.environ.get("DAGSTER_HOME") or REPO / ".dagster_home")
    browse(default.name, resolve_study_path("tiny"), store_root(), home, REPO / "docs" / "screenshots",
           k=default.evaluation.k, log=Path("/tmp/qup-webserver.log"))
    print(f"screenshots written to {REPO / 'docs' / 'screenshots'}")
