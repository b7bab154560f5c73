#!/usr/bin/env python3
"""Python baseline for `crew bench transfer --python`: a task that returns
its argument (echo, no compute) through a process pool of `--workers`, for
payloads of `bytes` of each size in `--sizes`, printed as one JSON line per
case (the records of crew's bench). Standard library only.

    python3 transfer_anchor.py                               # 1 KB ... 100 MB, 5 rounds
    python3 transfer_anchor.py --sizes 1000,100000 --rounds 1 --idle-timeout 0

Cases, per size (`<size>` as crew names it: `1kb`, `10mb`, `100mb`):

- `python.pool_apply_<size>`: `multiprocessing.Pool.apply(echo, (payload,))`,
  one call at a time;
- `python.ppe_submit_<size>`: `ProcessPoolExecutor.submit(echo, payload)
  .result()`, one call at a time.

Both pools use the fork start method, as the anchors do. A round makes
`calls(size)` calls (more for small payloads, so a round is long enough to
time); the rate is payload bytes in and out, `2 * size * calls / seconds`,
in MB/s (MB = 10^6 bytes). One warm-up round, then `--rounds` timed rounds,
interleaved; before each round the script waits until the CPUs are idle
(at most `--idle-timeout` seconds, 0 to not wait).
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import statistics
import sys
import time


def echo(payload):
    return payload


def calls(size):
    """Calls per round: 1,000 for tiny payloads down to 1 from 10 MB."""
    return max(1, min(1000, 10_000_000 // size))


def label(size):
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}mb"
    if size % 1_000 == 0:
        return f"{size // 1_000}kb"
    return f"{size}b"


def cpu_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]), v[3] + v[4]


def wait_idle(timeout, threshold=0.9, window=1.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        a_tot, a_idle = cpu_jiffies()
        time.sleep(window)
        b_tot, b_idle = cpu_jiffies()
        if (b_idle - a_idle) / max(1, b_tot - a_tot) >= threshold:
            return
    if timeout > 0:
        print(f"transfer_anchor: CPUs still busy after {timeout:.0f} s; measuring anyway",
              file=sys.stderr)


def record(case, samples):
    return {
        "suite": "transfer",
        "case": case,
        "unit": "MB/s",
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000,1000000,10000000,100000000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle-timeout", type=float, default=120.0)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    ctx = mp.get_context("fork")
    pool = ctx.Pool(args.workers)
    ppe = cf.ProcessPoolExecutor(args.workers, mp_context=ctx)
    pool.apply(echo, (b"warm",))
    ppe.submit(echo, b"warm").result()

    for size in sizes:
        payload = os.urandom(size)
        n = calls(size)

        def pool_apply():
            for _ in range(n):
                out = pool.apply(echo, (payload,))
            assert len(out) == size and out[-8:] == payload[-8:]

        def ppe_submit():
            for _ in range(n):
                out = ppe.submit(echo, payload).result()
            assert len(out) == size and out[-8:] == payload[-8:]

        cases = [(f"python.pool_apply_{label(size)}", pool_apply),
                 (f"python.ppe_submit_{label(size)}", ppe_submit)]
        for _, fn in cases:
            fn()
        rates = {name: [] for name, _ in cases}
        for _ in range(args.rounds):
            wait_idle(args.idle_timeout)
            for name, fn in cases:
                t0 = time.perf_counter()
                fn()
                rates[name].append(2 * size * n / (time.perf_counter() - t0) / 1e6)
        for name, samples in rates.items():
            print(json.dumps(record(name, samples)), flush=True)
        print(f"transfer_anchor: {label(size)} done", file=sys.stderr)

    pool.close()
    pool.join()
    ppe.shutdown()


if __name__ == "__main__":
    main()
