"""Celery + Redis no-op tasks, the peer of `crew bench cluster`.

python3 celery_anchor.py worker URL CONCURRENCY   -- a prefork worker
python3 celery_anchor.py client URL N ROUNDTRIPS  -- prints one JSON line

Broker and result backend on the same Redis (databases 2 and 3).
"""
import json
import sys
import time

from celery import Celery

URL = sys.argv[2]
app = Celery("crew_celery_anchor", broker=f"{URL}/2", backend=f"{URL}/3")
app.conf.worker_prefetch_multiplier = 64


@app.task
def noop(x):
    return x


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        app.worker_main(["worker", "--concurrency", sys.argv[3], "--pool", "prefork",
                         "--loglevel", "WARNING", "--without-gossip", "--without-mingle"])
    else:
        n, trips = int(sys.argv[3]), int(sys.argv[4])
        noop.delay(0).get(timeout=60)  # warm up
        t = time.perf_counter()
        rs = [noop.delay(i) for i in range(n)]
        t_sub = time.perf_counter() - t
        vals = [r.get(timeout=300) for r in rs]
        t_all = time.perf_counter() - t
        assert vals == list(range(n))
        lat = []
        for i in range(trips):
            t = time.perf_counter()
            noop.delay(i).get(timeout=60)
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(json.dumps({"submit": n / t_sub, "noop": n / t_all,
                          "p50_ms": lat[len(lat) // 2] * 1e3}))
