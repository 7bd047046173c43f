"""The response cache at paper scale, against loading every shard into memory (what it did until 2026-12-02).

One family's base-model namespace at paper scale holds 800K native samples plus evaluation samples. Here:
--responses completions of ~1,500 characters written in 64-response chunks over 8 shards, then, each in a
fresh process: open the namespace and read every 10th response (a resumed step asks for some), reporting
seconds and peak resident memory. The baseline decodes every line into one dict, as the old cache did.

Run: make bench   (or .venv/bin/python bench/bench_cache.py [--responses 200000])
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = ("Step 1: Ava has 12 coins and buys 7 more, so she has $12 + 7 = 19$ coins. " * 20)[:1500]


def write(root: Path, n: int) -> None:
    from qup_assets.backends.cache import ResponseCache

    per_shard = n // 8
    for s in range(8):
        with ResponseCache(root, "ns") as cache:
            for lo in range(s * per_shard, (s + 1) * per_shard, 64):
                cache.put_many([(f"{i:064x}", {"text": TEXT, "n_tokens": 380, "finish_reason": "stop"})
                                for i in range(lo, min(lo + 64, (s + 1) * per_shard))])


def child(mode: str, root: Path, n: int) -> None:
    t = time.perf_counter()
    keys = [f"{i:064x}" for i in range(0, n, 10)]
    if mode == "qup":
        from qup_assets.backends.cache import ResponseCache

        with ResponseCache(root, "ns") as cache:
            got = sum(cache.get(k) is not None for k in keys)
    else:  # the old cache: every line decoded into one dict when the namespace opens
        mem = {}
        for shard in sorted((root / "ns").glob("shard-*.jsonl")):
            with shard.open("rb") as f:
                for line in f:
                    rec = json.loads(line)
                    mem[rec["k"]] = rec["v"]
        got = sum(mem.get(k) is not None for k in keys)
    assert got == len(keys)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": peak_mb}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--responses", type=int, default=200_000)
    ap.add_argument("--child", choices=["qup", "load-all"])
    ap.add_argument("--root")
    args = ap.parse_args()
    if args.child:
        return child(args.child, Path(args.root), args.responses)
    root = Path(tempfile.mkdtemp())
    t = time.perf_counter()
    write(root, args.responses)
    size = sum(p.stat().st_size for p in (root / "ns").glob("*.jsonl")) / 1e6
    print(f"\nresponse cache: {args.responses:,} responses of {len(TEXT)} characters, {size:,.0f} MB on disk "
          f"(written in {time.perf_counter() - t:.1f} s); open, then read every 10th, in a fresh process")
    res = {}
    try:
        for mode in ("load-all", "qup"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--root", str(root),
                                  "--responses", str(args.responses)], check=True, capture_output=True, text=True)
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = res["load-all"]
    for mode, label in [("load-all", "every line decoded at open (old)"), ("qup", "index at open, values on demand")]:
        r = res[mode]
        print(f"  {label:36s} {r['seconds']:7.2f} s {r['peak_mb']:8.0f} MB peak   "
              f"{r['seconds'] / base['seconds']:5.2f}x time  {r['peak_mb'] / base['peak_mb']:5.2f}x memory")


if __name__ == "__main__":
    main()
