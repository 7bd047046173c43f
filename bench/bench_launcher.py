"""What the run launcher costs, and whether the UI path is as fast as `qup run`, on one new family.

On a micro study already materialized, one more family is added and computed three ways, each from
its own copy of the same store and instance:
  (a) in-process baseline: the family's job executed with `execute_in_process` in a fresh Python
      process (what `qup run` did before every run went through the run launcher)
  (b) `qup run --family NEW`: queue, daemon, run launcher, a run worker process
  (c) the UI path: the family_assets job launched with the new partition through the webserver's
      GraphQL API, exactly as the Launchpad's "Materialize" does, with `dagster dev` already up
Run: .venv/bin/python bench/bench_launcher.py
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NEW = "bench-llama"
FAMILY = (f"  {NEW}:\n    student: {{kind: synthetic, architecture: llama, style: llama, hidden_size: 64, "
          "num_layers: 2, pretrain_problems: 1000, pretrain_steps: 120}\n")
IN_PROCESS = """
import sys, dagster as dg
from qup_assets.definitions import build_definitions
job = build_definitions(sys.argv[1]).resolve_job_def("family_assets")
result = job.execute_in_process(instance=dg.DagsterInstance.get(), partition_key=sys.argv[2], raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


def env(root: Path) -> dict:
    return dict(os.environ, QUP_STORE=str(root / "store"), DAGSTER_HOME=str(root / "home"))


def qup(root: Path, *args) -> float:
    t = time.monotonic()
    subprocess.run([str(BIN / "qup"), *args], env=env(root), check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui_path(root: Path, study: Path) -> float:
    from dagster_graphql import DagsterGraphQLClient

    e = env(root)
    ws = subprocess.run([str(BIN / "qup"), "workspace", "--study", str(study)], env=e, check=True,
                        capture_output=True, text=True).stdout.strip()
    port = free_port()
    dev = subprocess.Popen([str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", ws], env=e,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import urllib.request

        deadline = time.monotonic() + 300
        while True:  # the UI is up (the client fetches the schema when it is made)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline or dev.poll() is not None:
                    raise RuntimeError("dagster dev did not come up") from None
                time.sleep(1)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        time.sleep(10)  # the code location loaded, the daemon's first heartbeat
        t = time.monotonic()
        run_id = client.submit_job_execution("family_assets", repository_location_name="micro",
                                             repository_name="__repository__", tags={"dagster/partition": NEW})
        while client.get_run_status(run_id).value not in ("SUCCESS", "FAILURE", "CANCELED"):
            time.sleep(0.5)
        elapsed = time.monotonic() - t
        assert client.get_run_status(run_id).value == "SUCCESS", f"UI run {run_id} failed"
        return elapsed
    finally:
        os.killpg(dev.pid, 15)
        dev.wait(timeout=60)


def main():
    from qup_assets.study import resolve_study_path

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        (base / "home").mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", base / "home" / "dagster.yaml")
        study = Path(tmp) / "micro.yaml"
        study.write_text(resolve_study_path("micro").read_text())
        cold = qup(base, "run", "--study", str(study))
        warm = qup(base, "run", "--study", str(study))
        print(f"cold {cold:.1f} s, warm {warm:.1f} s", flush=True)
        study.write_text(study.read_text().replace("families:\n", "families:\n" + FAMILY))
        qup(base, "families", "sync", "--study", str(study))
        time.sleep(25)  # the shared daemon of the cold run has stopped
        copies = {}
        for name in ("inproc", "qup", "ui"):
            copies[name] = Path(tmp) / name
            shutil.copytree(base, copies[name])
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", IN_PROCESS, str(study), NEW], env=env(copies["inproc"]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        inproc = time.monotonic() - t
        print(f"in-process {inproc:.1f} s", flush=True)
        family_only = " and ".join(f"not key:{k}" for k in ("problem_pool", "benchmarks", "reward_model", "paradox_report"))
        via_qup = qup(copies["qup"], "run", "--study", str(study), "--family", NEW, "--select", family_only)
        print(f"qup run {via_qup:.1f} s", flush=True)
        via_ui = ui_path(copies["ui"], study)
    print(f"micro study through the run launcher ({os.cpu_count()} cores):")
    print(f"  cold (qup run, one family):                 {cold:7.1f} s")
    print(f"  warm re-run, nothing changed:               {warm:7.1f} s   {warm / cold:.1%} of cold")
    print(f"  new family, in-process baseline:            {inproc:7.1f} s   baseline")
    print(f"  new family, qup run --family:               {via_qup:7.1f} s   {via_qup / inproc:.2f}x baseline")
    print(f"  new family, UI launch (family_assets job):  {via_ui:7.1f} s   {via_ui / inproc:.2f}x baseline, "
          f"{via_ui / via_qup:.2f}x qup run")


if __name__ == "__main__":
    main()
