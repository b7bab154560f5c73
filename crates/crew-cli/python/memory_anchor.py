#!/usr/bin/env python3
"""Python baseline for `crew bench memory`: joblib.Memory cache hits,
printed as one JSON line per case (the records of crew's bench).

    python3 memory_anchor.py                      # 100 MB, 2,000 small calls, 5 rounds
    python3 memory_anchor.py --size-mb 1 --rounds 1 --calls 50   # a smoke run

Needs joblib and numpy (`pip install -r requirements.txt`; `crew bench
memory --python` sets up a virtual environment with them by itself).

The same two cases as crew's side, measured the same way:

- `joblib.hit_small`: a cached `f(x) = x * x` called `--calls` times with
  arguments already in the cache; microseconds per call.
- `joblib.hit_100mb`: a cached function returning a float64 array of
  `--size-mb` MB, called once with arguments in the cache (the result is
  loaded from disk, as joblib does by default: a copy, `mmap_mode=None`);
  MB/s. `joblib.hit_100mb_mmap` loads it with `mmap_mode="r"` (joblib
  checks nothing then, and maps the array).

Each case is computed once before timing (so every timed call is a hit),
then one warm-up round, then `--rounds` timed rounds. Median, min and max
are over the rounds.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time

import joblib
import numpy as np


def square(x):
    return x * x


def block(n, seed):
    return np.arange(n, dtype=np.float64) * seed


def record(case, unit, samples):
    return {
        "suite": "memory",
        "case": case,
        "unit": unit,
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--size-mb", type=float, default=100.0)
    a = ap.parse_args()
    n = int(a.size_mb * 1e6 / 8)
    with tempfile.TemporaryDirectory(prefix="joblib-anchor-") as location:
        mem = joblib.Memory(location, verbose=0)
        mem_mmap = joblib.Memory(location, mmap_mode="r", verbose=0)
        small = mem.cache(square)
        big = mem.cache(block)
        big_mmap = mem_mmap.cache(block)
        for x in range(a.calls):
            small(x)
        expect = float(big(n, 3.0)[-1])

        def small_round():
            t = time.perf_counter()
            total = 0
            for x in range(a.calls):
                total += small(x)
            dt = time.perf_counter() - t
            assert total == sum(x * x for x in range(a.calls))
            return dt / a.calls * 1e6

        def big_round(f):
            t = time.perf_counter()
            out = f(n, 3.0)
            last = float(out[-1])
            dt = time.perf_counter() - t
            assert last == expect and len(out) == n
            return n * 8 / dt / 1e6

        cases = [
            ("joblib.hit_small", "µs/call", small_round),
            ("joblib.hit_100mb", "MB/s", lambda: big_round(big)),
            ("joblib.hit_100mb_mmap", "MB/s", lambda: big_round(big_mmap)),
        ]
        samples = {c: [] for c, _, _ in cases}
        for _, _, run in cases:
            run()
        for _ in range(a.rounds):
            for c, _, run in cases:
                samples[c].append(run())
        for c, unit, _ in cases:
            print(json.dumps(record(c, unit, samples[c])))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
