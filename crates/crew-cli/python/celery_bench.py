"""No-op Celery tasks from a Python client, for `crew bench celery`: the same
client against a crew node and against a Celery prefork worker.

python3 celery_bench.py worker URL CONCURRENCY QUEUE   -- a prefork worker
python3 celery_bench.py client URL N ROUNDTRIPS QUEUE  -- prints one JSON line

Broker and result backend on the same Redis (databases 4 and 5). The task is
named `bench.noop` on both sides.
"""
import json
import sys
import time

from celery import Celery

URL = sys.argv[2]
app = Celery("crew_celery_bench", broker=f"{URL}/4", backend=f"{URL}/5")
app.conf.worker_prefetch_multiplier = 64


@app.task(name="bench.noop")
def noop(x):
    return x


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        app.worker_main(["worker", "--concurrency", sys.argv[3], "--pool", "prefork",
                         "-Q", sys.argv[4], "--loglevel", "WARNING",
                         "--without-gossip", "--without-mingle"])
    else:
        n, trips, queue = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        send = lambda i: app.send_task("bench.noop", (i,), queue=queue)
        send(0).get(timeout=60)  # warm up
        t = time.perf_counter()
        rs = [send(i) for i in range(n)]
        vals = [r.get(timeout=300) for r in rs]
        t_all = time.perf_counter() - t
        assert vals == list(range(n))
        lat = []
        for i in range(trips):
            t = time.perf_counter()
            assert send(i).get(timeout=60) == i
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(json.dumps({"noop": n / t_all, "p50_ms": lat[len(lat) // 2] * 1e3}))
