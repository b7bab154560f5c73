#!/usr/bin/env python3
"""Python baseline for crew-shm: multiprocessing.Queue throughput and
Value-under-lock increments, printed as one JSON line per case.

    python3 shm_anchor.py            # 200,000 items; 4 x 50,000 increments; 5 runs
    python3 shm_anchor.py --quick    # tiny sizes, to check that it works

Each run starts the worker processes first and times only the work: the
clock starts when the parent sets a start event the workers are waiting on,
and stops when the last worker has finished (joined). One warm-up run is
discarded. Rates are items (or increments) per second; median, min and max
are over the timed runs. Uses the platform's default start method (fork on
Linux), as a Python user would.
"""

import json
import multiprocessing as mp
import statistics
import sys
import time


def produce(queue, start, n):
    start.wait()
    for i in range(n):
        queue.put(i)
    queue.put(None)


def consume(queue, start, n, ok):
    start.wait()
    total = 0
    count = 0
    while True:
        item = queue.get()
        if item is None:
            break
        total += item
        count += 1
    ok.value = int(count == n and total == n * (n - 1) // 2)


def queue_run(n):
    """One producer process -> one consumer process through mp.Queue."""
    queue = mp.Queue()
    start = mp.Event()
    ok = mp.Value("i", 0)
    procs = [
        mp.Process(target=produce, args=(queue, start, n)),
        mp.Process(target=consume, args=(queue, start, n, ok)),
    ]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    assert ok.value == 1, "consumer did not receive every item"
    return n / elapsed


def increment(value, start, n):
    start.wait()
    for _ in range(n):
        with value.get_lock():
            value.value += 1


def lock_run(processes, n):
    """`processes` processes each increment a shared Value('i') n times."""
    value = mp.Value("i", 0)
    start = mp.Event()
    procs = [mp.Process(target=increment, args=(value, start, n)) for _ in range(processes)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    assert value.value == processes * n, f"lost updates: {value.value}"
    return processes * n / elapsed


def report(case, unit, rates):
    print(json.dumps({
        "suite": "shm",
        "case": case,
        "unit": unit,
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": len(rates),
    }), flush=True)


def main():
    quick = "--quick" in sys.argv[1:]
    items = 2_000 if quick else 200_000
    increments = 500 if quick else 50_000
    runs = 2 if quick else 5
    cases = [
        ("python.queue.items_per_s", "items/s", lambda: queue_run(items)),
        ("python.lock.increments_per_s", "increments/s", lambda: lock_run(4, increments)),
    ]
    for _, _, run in cases:
        run()  # warm-up
    rates = {name: [] for name, _, _ in cases}
    for _ in range(runs):  # interleaved, so drifting load hits both alike
        for name, _, run in cases:
            rates[name].append(run())
    for name, unit, _ in cases:
        report(name, unit, rates[name])


if __name__ == "__main__":
    main()
