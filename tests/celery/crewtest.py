"""The Celery app of crew's Celery tests: a few Python tasks, and a driver
that calls the Rust tasks a crew node serves. Broker and backend come from
CREW_TEST_REDIS (redis://127.0.0.1:port)."""
import json
import os
import sys
import time

from celery import Celery, chain, chord, group

URL = os.environ["CREW_TEST_REDIS"]
app = Celery("crewtest", broker=f"{URL}/0", backend=f"{URL}/1")
app.conf.broker_transport_options = {"visibility_timeout": 3600}
app.conf.worker_prefetch_multiplier = 1
app.conf.task_acks_late = True
# Task messages from crew's Client may be msgpack (CREW_TEST_ACCEPT narrows
# what a worker reads, to show what a message was written in).
app.conf.accept_content = os.environ.get("CREW_TEST_ACCEPT", "json,msgpack").split(",")
if os.environ.get("CREW_TEST_RESULT_SERIALIZER"):
    app.conf.result_serializer = os.environ["CREW_TEST_RESULT_SERIALIZER"]
    app.conf.result_accept_content = [app.conf.result_serializer]


@app.task(name="py.mul")
def mul(x, y):
    return x * y


@app.task(name="py.sum")
def py_sum(xs, extra=0):
    return sum(xs) + extra


@app.task(name="py.echo")
def echo(*args, **kwargs):
    return [list(args), kwargs]


@app.task(name="py.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="py.failed")
def failed(task_id):
    """An errback: Celery calls it with the id of the task that failed."""
    return f"failed {task_id}"


@app.task(name="mixed.who")
def who(i):
    time.sleep(0.02)
    return "python"


def outcome(r, timeout=30):
    """A result as [status, value or 'Module.Type: message']."""
    try:
        return ["ok", r.get(timeout=timeout)]
    except Exception as e:  # the point: Rust failures arrive as exceptions
        return ["err", f"{type(e).__module__}.{type(e).__name__}: {e}"]


def drive(scenario):
    send = app.send_task
    out = {}
    if scenario == "calls":
        out["add"] = outcome(send("tasks.add", (2, 3)))
        out["kwargs"] = outcome(send("tasks.add", (2,), {"y": 40}))
        out["scale"] = outcome(send("tasks.scale", ([1.5, 2.0],), {"by": 2}))
        out["panic"] = outcome(send("tasks.panic", ("boom",)))
        out["missing"] = outcome(send("tasks.add", (1,)))
        out["unknown"] = outcome(send("tasks.nope", ()))
        out["segfault"] = outcome(send("tasks.segfault", ()))
        out["time_limit"] = outcome(send("tasks.sleep_ms", (20000,), time_limit=1))
        out["in_time"] = outcome(send("tasks.sleep_ms", (10,), time_limit=10))
        out["msgpack"] = outcome(send("tasks.scale", ([1.5, 2.0],), {"by": 2},
                                      serializer="msgpack"))
        c = chain(app.signature("tasks.add", (1, 2)), app.signature("tasks.add", (10,)),
                  app.signature("tasks.add", (100,)))
        out["msgpack_chain"] = outcome(c.apply_async(serializer="msgpack"))
        out["zlib"] = outcome(send("tasks.scale", ([1.5, 2.0],), {"by": 2},
                                   compression="zlib"))
        out["zlib_msgpack"] = outcome(send("tasks.add", (20, 22), serializer="msgpack",
                                           compression="gzip"))
        out["bz2"] = outcome(send("tasks.add", (1, 2), compression="bzip2"))
        out["pickle"] = outcome(send("tasks.add", (1, 2), serializer="pickle"))
        out["parse_ok"] = outcome(send("tasks.parse", ("42",)))
        r = send("tasks.parse", ("forty-two",))
        out["parse_err"] = outcome(r)
        out["parse_err_state"] = r.state
        out["string_err"] = outcome(send("tasks.checked_div", (1, 0)))
        out["value_error"] = outcome(send("tasks.positive", (-3,)))
        out["soft_wound_down"] = outcome(send("tasks.until_soft_limit", (20000, False),
                                              soft_time_limit=0.3, time_limit=30))
        out["soft_failed"] = outcome(send("tasks.until_soft_limit", (20000, True),
                                          soft_time_limit=0.3))
        out["soft_in_thread"] = outcome(send("tasks.soft_limit_in_thread", (20000,),
                                             soft_time_limit=0.3, time_limit=30))
        out["soft_ignored"] = outcome(send("tasks.sleep_ms", (1500,), soft_time_limit=0.3))
        out["soft_then_hard"] = outcome(send("tasks.sleep_ms", (20000,), soft_time_limit=0.3,
                                             time_limit=1.5))
        out["expired"] = outcome(send("tasks.add", (1, 1), expires=-5))
        t = time.time()
        out["eta"] = outcome(send("tasks.add", (5, 5), countdown=1))
        out["eta_waited"] = time.time() - t
        out["after_crash"] = outcome(send("tasks.add", (7, 8)))
        c = chain(app.signature("tasks.add", (1, 2)), app.signature("tasks.add", (10,)),
                  app.signature("tasks.add", (100,)))
        out["chain"] = outcome(c.apply_async())
        header = [app.signature("tasks.add", (i, i)) for i in range(4)]
        out["chord"] = outcome(chord(header, app.signature("tasks.total"))())
        header = [app.signature("tasks.add", (1, 1)), app.signature("tasks.panic", ("member",))]
        body = chord(header, app.signature("tasks.total"))()
        # The body's own result (without its parent group, whose get()
        # would raise the member's error first).
        out["chord_failed"] = outcome(app.AsyncResult(body.id))
    elif scenario == "chain_to_python":
        # The Rust task on the node's queue, the Python one on `celery`.
        c = chain(app.signature("tasks.add", (1, 2), queue="rust"),
                  app.signature("py.mul", (10,), queue="celery"))
        out["chain"] = outcome(c.apply_async())
    elif scenario == "chord_canvas":
        # Rust tasks on the node's queue `rust`, Python ones on `celery`.
        def rust(name, *args):
            return app.signature(name, args, queue="rust")

        def py(name, *args):
            return app.signature(name, args, queue="celery")

        header = [rust("tasks.add", 1, 1), rust("tasks.add", 2, 2)]
        # A group as the body: each member gets the header's results.
        body = group(py("py.sum", 100), rust("tasks.total"))
        out["group_body"] = outcome(chord(header, body)())
        # A chain as the body: the results go to its first task.
        header = [rust("tasks.add", 1, 1), rust("tasks.add", 2, 2)]
        body = chain(rust("tasks.total"), py("py.mul", 10))
        out["chain_body"] = outcome(chord(header, body)())
        # A chain in the header, Rust then Python, beside a Rust task; the
        # body is Rust.
        header = [chain(rust("tasks.add", 1, 2), py("py.mul", 10)), rust("tasks.add", 5, 5)]
        out["chain_in_header"] = outcome(chord(header, rust("tasks.total"))())
        # The same, Python then Rust, with a Python body.
        header = [chain(py("py.mul", 2, 3), rust("tasks.add", 4)), py("py.mul", 1, 1)]
        out["chain_in_header_py_body"] = outcome(chord(header, py("py.sum"))())
        # A Rust task fails inside a header's chain: the chain's later
        # step fails with it, and so does the chord's body (no hang).
        later = py("py.mul", 10)
        later_result = later.freeze()
        header = [chain(rust("tasks.panic", "in a chain"), later), rust("tasks.add", 1, 1)]
        body = chord(header, rust("tasks.total"))()
        out["failed_in_header_chain"] = outcome(app.AsyncResult(body.id))
        out["failed_chain_step"] = outcome(later_result)
    elif scenario == "group_canvas":
        # Groups after a Rust task (on the node's queue `rust`), as a
        # chain's next step, in a link, and made a chord by a later step.
        def rust(name, *args):
            return app.signature(name, args, queue="rust")

        def py(name, *args):
            return app.signature(name, args, queue="celery")

        # chain(rust, group): the node starts the group's members with its
        # result; the client holds the GroupResult.
        c = chain(rust("tasks.add", 1, 2), group(py("py.mul", 10), rust("tasks.add", 100)))
        out["chain_group"] = outcome(c.apply_async())
        # A group as a link.
        g = group(py("py.mul", 10), rust("tasks.add", 1000))
        g_result = g.freeze()
        r = send("tasks.add", (2, 3), queue="rust", link=g)
        out["link_add"] = outcome(r)
        out["link_group"] = outcome(g_result)
        # chain(rust, group, python): Celery makes the group and the step
        # after it a chord, which the node starts.
        c = chain(rust("tasks.add", 1, 2), group(py("py.mul", 10), rust("tasks.add", 100)),
                  py("py.sum"))
        out["chain_chord_py"] = outcome(c.apply_async())
        # The same with a Rust body, the node completing the chord, and a
        # step after the body (the chain goes on from the body).
        c = chain(rust("tasks.add", 1, 2), group(rust("tasks.add", 10), rust("tasks.add", 20)),
                  rust("tasks.total"), py("py.mul", 2))
        out["chain_chord_rust"] = outcome(c.apply_async())
        # A chord whose body is a group, all members Rust, after a Rust
        # task.
        c = chain(rust("tasks.add", 1, 1),
                  chord(group(rust("tasks.add", 1), rust("tasks.add", 2)),
                        group(rust("tasks.total"), py("py.sum", 100))))
        out["chain_chord_group_body"] = outcome(c.apply_async())
    elif scenario == "results":
        # Whatever result_serializer this client reads (the environment's).
        out["add"] = outcome(send("tasks.add", (2, 3)))
        out["scale"] = outcome(send("tasks.scale", ([1.5, 2.0],), {"by": 2}))
        out["parse_err"] = outcome(send("tasks.parse", ("x",)))
        header = [app.signature("tasks.add", (i, i)) for i in range(4)]
        out["chord"] = outcome(chord(header, app.signature("tasks.total"))())
    elif scenario == "link":
        # Rust tasks on the node's queue, their callbacks and errbacks
        # Python tasks on `celery`.
        cb = app.signature("py.mul", (10,), queue="celery")
        cb_result = cb.freeze()
        r = send("tasks.add", (2, 3), queue="rust", link=cb)
        out["add"] = outcome(r)
        out["callback"] = outcome(cb_result)
        eb = app.signature("py.failed", queue="celery")
        eb_result = eb.freeze()
        unused = app.signature("py.mul", (1,), queue="celery")
        unused_result = unused.freeze()
        r = send("tasks.panic", ("linked",), queue="rust", link=unused, link_error=eb)
        out["panic_id"] = r.id
        out["panic"] = outcome(r)
        out["errback"] = outcome(eb_result)
        # A failure sends no callback, and a success no errback.
        eb2 = app.signature("py.failed", queue="celery")
        eb2_result = eb2.freeze()
        out["ok_with_errback"] = outcome(send("tasks.add", (1, 1), queue="rust", link_error=eb2))
        time.sleep(1)
        out["unused_callback"] = unused_result.state
        out["unused_errback"] = eb2_result.state
    elif scenario == "send":
        # args: task, json args, priority
        r = send(sys.argv[2], tuple(json.loads(sys.argv[3])), priority=int(sys.argv[4]))
        out["id"] = r.id
    elif scenario == "wait":
        out["result"] = outcome(app.AsyncResult(sys.argv[2]), timeout=float(sys.argv[3]))
    elif scenario == "mixed":
        rs = [send("mixed.who", (i,)) for i in range(int(sys.argv[2]))]
        out["who"] = [outcome(r)[1] for r in rs]
    elif scenario == "inspect":
        # Waits for a crew node to answer a ping, then asks it what it runs.
        deadline = time.time() + 60
        node = None
        while node is None:
            pongs = app.control.inspect(timeout=1).ping() or {}
            node = next((h for h in pongs if h.startswith("crew@")), None)
            if node is None and time.time() > deadline:
                raise SystemExit(f"no crew node answered a ping: {pongs}")
        out["node"] = node
        out["ping"] = pongs[node]
        busy = send("tasks.sleep_ms", (4000,))
        one = app.control.inspect(destination=[node], timeout=2)
        active = []
        while not active and time.time() < deadline:
            active = (one.active() or {}).get(node, [])
        out["active"] = active
        out["busy_id"] = busy.id
        out["registered"] = (one.registered() or {}).get(node)
        # Behind the busy task (one worker process): taken ahead, waiting.
        queued = send("tasks.add", (1, 1))
        later = send("tasks.add", (2, 2), countdown=600)
        reserved, scheduled = [], []
        while (not reserved or not scheduled) and time.time() < deadline:
            reserved = (one.reserved() or {}).get(node, [])
            scheduled = (one.scheduled() or {}).get(node, [])
        out["reserved"] = [r["id"] for r in reserved]
        out["scheduled"] = [r["request"]["id"] for r in scheduled]
        out["queued_id"], out["later_id"] = queued.id, later.id
        outcome(busy)
        out["stats"] = (one.stats() or {}).get(node)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out))


if __name__ == "__main__":
    drive(sys.argv[1])
