"""No-op Celery tasks from a Python client, for `crew bench celery`: the same
client against a crew node and against a Celery prefork worker.

python3 celery_bench.py worker URL CONCURRENCY QUEUE   -- a prefork worker
python3 celery_bench.py client URL N ROUNDTRIPS QUEUE  -- prints one JSON line

Broker and result backend on the same Redis (databases 4 and 5). The task is
named `bench.noop` on both sides.

Throughput measures the worker, not this client: the client queues N tasks
on a list nobody reads (`QUEUE.staged`), then renames it to QUEUE in one
step, so the worker finds all N at once; it then waits without taking part
(one DBSIZE every 10 ms) and computes N / (the last result's `date_done` -
the Redis time of the rename). A client that sent and collected the tasks
while they run would share the machine's CPUs with the worker and bound
what it can show. Latency is the client's: one `send_task(...).get()` after
the other.
"""
import datetime
import json
import sys
import time

import redis
from celery import Celery

URL = sys.argv[2]
app = Celery("crew_celery_bench", broker=f"{URL}/4", backend=f"{URL}/5")
app.conf.worker_prefetch_multiplier = 64


@app.task(name="bench.noop")
def noop(x):
    return x


def done_at(raw):
    meta = json.loads(raw)
    assert meta["status"] == "SUCCESS", meta
    t = datetime.datetime.fromisoformat(meta["date_done"])
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def flood(n, queue):
    """N tasks released at once; tasks/s from the release to the last result."""
    # No result backend on the sending side: no subscription per task.
    sender = Celery("crew_celery_bench", broker=f"{URL}/4")
    broker = redis.Redis.from_url(f"{URL}/4")
    backend = redis.Redis.from_url(f"{URL}/5")
    staged = f"{queue}.staged"
    broker.delete(staged)
    backend.flushdb()
    ids = [sender.send_task("bench.noop", (i,), queue=staged).id for i in range(n)]
    assert broker.llen(staged) == n
    p = broker.pipeline(transaction=True)
    p.time()
    p.rename(staged, queue)
    (sec, usec), _ = p.execute()
    released = sec + usec / 1e6
    deadline = time.time() + 300
    while backend.dbsize() < n:
        assert time.time() < deadline, "the worker did not finish in 300 s"
        time.sleep(0.01)
    raws = backend.mget([f"celery-task-meta-{i}" for i in ids])
    assert all(raws), "a result is missing"
    vals = [json.loads(r)["result"] for r in raws]
    assert vals == list(range(n)), "wrong results"
    return n / (max(done_at(r) for r in raws) - released)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        app.worker_main(["worker", "--concurrency", sys.argv[3], "--pool", "prefork",
                         "-Q", sys.argv[4], "--loglevel", "WARNING",
                         "--without-gossip", "--without-mingle"])
    else:
        n, trips, queue = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        send = lambda i: app.send_task("bench.noop", (i,), queue=queue)
        send(0).get(timeout=60)  # warm up
        rate = flood(n, queue)
        lat = []
        for i in range(trips):
            t = time.perf_counter()
            assert send(i).get(timeout=60) == i
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(json.dumps({"noop": rate, "p50_ms": lat[len(lat) // 2] * 1e3}))
