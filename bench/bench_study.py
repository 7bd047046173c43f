"""Whole-study costs through `qup run`, each against a baseline measured in the same run.

  (a) cold: the study from an empty store and instance (the baseline)
  (b) warm: the same command again, nothing changed (everything up to date)
  (c) add a family: one more family in the study file, `qup run --family NEW`
  (d) full: the two-family study cold, in a fresh store (what (c) avoids)
  peak memory: the largest resident set of any process of the cold run (the run workers the daemon
               launches are not qup's children, so /proc is sampled for processes of the study's home)

Default study: micro.yaml (one family; minutes), so `make bench` fits its 15-minute budget. The
tiny study's cold/warm figures come from `make study` and are in the README.
Run: .venv/bin/python bench/bench_study.py [--study micro]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEW_FAMILY = ("  bench-llama:\n    student: {kind: synthetic, architecture: llama, style: llama, hidden_size: 128, "
              "num_layers: 2, pretrain_problems: 1500, pretrain_steps: 300}\n")


class PeakRSS:
    """The largest VmRSS of any process whose DAGSTER_HOME is `home`, sampled every 0.2 s."""

    def __init__(self, home: Path):
        import threading

        self.home, self.peak_kb, self._stop = str(home), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        marker = f"DAGSTER_HOME={self.home}".encode()
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and marker in proc.joinpath("environ").read_bytes():
                        for line in proc.joinpath("status").read_text().splitlines():
                            if line.startswith("VmRSS:"):
                                self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    continue
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def qup(args: list[str], root: Path) -> float:
    env = dict(os.environ, QUP_STORE=str(root / "store"), DAGSTER_HOME=str(root / "home"))
    (root / "home").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", root / "home" / "dagster.yaml")
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "qup_assets.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="micro")
    args = ap.parse_args()
    from qup_assets.study import resolve_study_path

    text = resolve_study_path(args.study).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        one.mkdir()
        two.mkdir()
        study = one / "study.yaml"
        study.write_text(text)
        with PeakRSS(one / "home") as peak:
            cold = qup(["run", "--study", str(study)], one)
        peak_mb = peak.peak_kb / 1024
        time.sleep(25)
        warm = qup(["run", "--study", str(study)], one)
        study.write_text(text.replace("families:\n", "families:\n" + NEW_FAMILY))
        qup(["families", "sync", "--study", str(study)], one)
        time.sleep(25)  # the shared daemon of the cold run stops: every measurement starts its own
        add = qup(["run", "--study", str(study), "--family", "bench-llama"], one)
        full_study = two / "study.yaml"
        full_study.write_text(study.read_text())
        full = qup(["run", "--study", str(full_study)], two)
    print(f"study {args.study} through qup run ({os.cpu_count()} cores):")
    print(f"  (a) cold, one family:                    {cold:7.1f} s   baseline")
    print(f"  (b) warm re-run, nothing changed:        {warm:7.1f} s   {warm / cold:.1%} of cold")
    print(f"  (c) add a family (--family NEW):         {add:7.1f} s")
    print(f"  (d) the two-family study cold:           {full:7.1f} s   adding costs {add / full:.0%} of it")
    print(f"  peak resident memory, largest process:   {peak_mb:7.0f} MB")


if __name__ == "__main__":
    main()
