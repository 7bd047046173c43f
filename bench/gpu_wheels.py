"""Gather the wheels a bare CUDA machine without network needs for `make gpu-smoke`, into .whl/ (git-ignored).

What to bring: qup's dependencies resolved for the machine's Python (3.12) on manylinux with the GPU pin set
(deploy/gpu-constraints.txt, which names the image's torch, transformers and accelerate), less every package
the image already holds (bench/gpu_image_packages.txt) and duckdb (only `qup sql` and `qup plan` use it).
It prints each wheel's size and fails when the wheels and the repository's tracked files together pass the
budget (64 MiB: what a lent machine accepts in one call). There: `make gpu-smoke` installs them with
pip --no-index --no-deps into a folder on PYTHONPATH, beside the image's own torch.

Run here (needs the package registry): .venv/bin/python bench/gpu_wheels.py [--python 3.12] [--vllm]
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "any"]
SKIP = {"duckdb"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(vllm: bool) -> list[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return deps + (["vllm"] if vllm else [])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default="3.12")
    ap.add_argument("--out", default=str(REPO / ".whl"))
    ap.add_argument("--image", default=str(REPO / "bench" / "gpu_image_packages.txt"))
    ap.add_argument("--budget-mib", type=float, default=64.0)
    ap.add_argument("--vllm", action="store_true", help="bring vLLM too (hundreds of MB: over any one-call budget)")
    args = ap.parse_args()
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    image = {norm(line.strip()) for line in Path(args.image).read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(requirements(args.vllm)) + "\n")
        pinned = subprocess.run([uv, "pip", "compile", str(req), "-c", str(REPO / "deploy" / "gpu-constraints.txt"),
                                 "--python-version", args.python, "--python-platform", "x86_64-manylinux_2_28",
                                 "--no-header", "--no-annotate", "-q"], check=True, capture_output=True,
                                text=True).stdout
    pins = [line.strip() for line in pinned.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    bring = [p for p in pins if norm(p.split("==")[0]) not in image | SKIP]
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           args.python, "--implementation", "cp", "-d", str(out), *bring]
    for p in PLATFORMS:
        cmd[cmd.index("--implementation"):cmd.index("--implementation")] = ["--platform", p]
    subprocess.run(cmd, check=True)
    wheels = sorted(out.glob("*.whl"), key=lambda w: -w.stat().st_size)
    mib = sum(w.stat().st_size for w in wheels) / 2**20
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    repo_mib = sum((REPO / f.decode()).stat().st_size for f in tracked if f and (REPO / f.decode()).is_file()) / 2**20
    for w in wheels:
        print(f"  {w.stat().st_size / 2**20:6.1f} MiB  {w.name}")
    print(f"{len(wheels)} wheels for Python {args.python}: {mib:.1f} MiB; with the repository's tracked files "
          f"({repo_mib:.1f} MiB): {mib + repo_mib:.1f} MiB of {args.budget_mib:g}")
    if mib + repo_mib > args.budget_mib:
        print(f"error: over the budget by {mib + repo_mib - args.budget_mib:.1f} MiB; the largest: {wheels[0].name}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
