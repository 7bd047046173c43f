"""Whole-study costs through `qup run`, each against a baseline measured in the same run.

  (a) cold: the study from an empty store and instance, its students and RM copied from data/world
  (b) warm: the same command again, nothing changed (everything up to date)
  (p) previous layout: cold again, with no shipped world (QUP_WORLD pointed at an empty folder), so every
      student and RM is pretrained in the run, as before `qup world build` existed (the baseline)
  (c) add a family: one more family in the study file, `qup run --family NEW` (micro only)
  (d) full: the two-family study cold, in a fresh store (what (c) avoids; micro only)
  stages: step-seconds per stage of (a) and (p), from each run's Dagster event log (STEP_START to its end)
  peak memory: the largest resident set of any process of the cold run (the run workers the daemon
               launches are not qup's children, so /proc is sampled for processes of the study's home)

Default study: micro.yaml (one family; minutes). `--study tiny` measures the default study (about 25 min on
2 cores: a cold run with and without the shipped world). Sampling has no old path to compare against in the
same run (the old decode loop is gone); bench_sampling.py measures the sampler.
Run: .venv/bin/python bench/bench_study.py [--study micro|tiny]
"""

import argparse
import json
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


def qup(args: list[str], root: Path, world: Path | None = None) -> float:
    env = dict(os.environ, QUP_STORE=str(root / "store"), DAGSTER_HOME=str(root / "home"))
    if world is not None:
        env["QUP_WORLD"] = str(world)
    (root / "home").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", root / "home" / "dagster.yaml")
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "qup_assets.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


STAGES = ("base_model", "reward_model", "native_samples", "checkpoints", "evaluation")


def stage_of(step: str) -> str:
    if step.endswith(("_evaluation", "_eval", "_per_problem")):
        return "evaluation"
    if step.endswith("_checkpoints"):
        return "checkpoints"
    return step if step in STAGES else "everything else"


def stage_seconds(home: Path) -> dict[str, float]:
    """Step-seconds per stage over every run of the instance in `home` (its event log)."""
    code = (
        "import json, sys, dagster as dg\n"
        "i = dg.DagsterInstance.get(); out = {}\n"
        "for r in i.get_runs():\n"
        "    start = {}\n"
        "    for e in i.all_logs(r.run_id):\n"
        "        if not e.is_dagster_event or not e.step_key: continue\n"
        "        t = e.dagster_event_type\n"
        "        if t == dg.DagsterEventType.STEP_START: start[e.step_key] = e.timestamp\n"
        "        elif t in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE) and e.step_key in start:\n"
        "            out.setdefault(e.step_key, 0.0); out[e.step_key] += e.timestamp - start.pop(e.step_key)\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, DAGSTER_HOME=str(Path(home).resolve())),
                         capture_output=True, text=True, check=True)
    per_stage: dict[str, float] = {}
    for step, secs in json.loads(res.stdout.strip().splitlines()[-1]).items():
        per_stage[stage_of(step)] = per_stage.get(stage_of(step), 0.0) + secs
    return per_stage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="micro")
    args = ap.parse_args()
    from qup_assets.study import resolve_study_path

    text = resolve_study_path(args.study).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        one, prev, two, empty = (Path(tmp) / d for d in ("one", "prev", "two", "empty-world"))
        for d in (one, prev, two, empty):
            d.mkdir()
        # the study keeps its name (the shipped world is found by it) and file; each measurement its own store
        study = one / f"{args.study}.yaml"
        study.write_text(text)
        with PeakRSS(one / "home") as peak:
            cold = qup(["run", "--study", str(study)], one)
        peak_mb = peak.peak_kb / 1024
        time.sleep(25)  # the shared daemon of the cold run stops: every measurement starts its own
        warm = qup(["run", "--study", str(study)], one)
        prev_study = prev / f"{args.study}.yaml"
        prev_study.write_text(text)
        previous = qup(["run", "--study", str(prev_study)], prev, world=empty)
        shares = {"(a) shipped world": stage_seconds(one / "home"), "(p) previous layout": stage_seconds(prev / "home")}
        add = full = None
        if args.study == "micro":
            study.write_text(text.replace("families:\n", "families:\n" + NEW_FAMILY))
            qup(["families", "sync", "--study", str(study)], one)
            time.sleep(25)
            add = qup(["run", "--study", str(study), "--family", "bench-llama"], one)
            full_study = two / "micro.yaml"
            full_study.write_text(study.read_text())
            full = qup(["run", "--study", str(full_study)], two)
    print(f"study {args.study} through qup run ({os.cpu_count()} cores):")
    print(f"  (p) cold, previous layout (pretrained in the run): {previous:7.1f} s   baseline")
    print(f"  (a) cold, students and RM from data/world:         {cold:7.1f} s   {cold / previous:.2f}x")
    print(f"  (b) warm re-run, nothing changed:                  {warm:7.1f} s   {warm / cold:.1%} of (a)")
    if add is not None:
        print(f"  (c) add a family (--family NEW, pretrained):       {add:7.1f} s")
        print(f"  (d) the two-family study cold:                     {full:7.1f} s   adding costs {add / full:.0%} of it")
    print(f"  peak resident memory, largest process:             {peak_mb:7.0f} MB")
    print("\nstep-seconds per stage (share of the run's step-seconds):")
    print(f"  {'stage':18s}" + "".join(f"{k:>28s}" for k in shares))
    for stage in (*STAGES, "everything else"):
        cells = []
        for per in shares.values():
            total = sum(per.values()) or 1.0
            cells.append(f"{per.get(stage, 0.0):10.0f} s ({per.get(stage, 0.0) / total:5.1%})")
        print(f"  {stage:18s}" + "".join(f"{c:>28s}" for c in cells))
    totals = [sum(per.values()) for per in shares.values()]
    print(f"  {'all steps':18s}" + "".join(f"{t:>26.0f} s" for t in totals) + f"   ratio {totals[0] / max(totals[1], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
