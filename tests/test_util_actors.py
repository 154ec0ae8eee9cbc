"""nanoray.util.ActorPool and nanoray.util.queue.Queue, as a Ray user relies
on them: result order, completion order, timeouts, Empty/Full, batches,
queues handed to tasks and actors, shutdown."""

import asyncio
import os
import queue as std_queue
import subprocess
import sys
import time

import pytest

import nanoray
from nanoray.util import ActorPool
from nanoray.util.queue import Empty, Full, Queue


class _Worker:
    """Counts its calls; each call sleeps `delay`, then returns (pid, value)."""

    def __init__(self):
        self.calls = 0

    def work(self, delay, value):
        self.calls += 1
        time.sleep(delay)
        if isinstance(value, Exception):
            raise value
        return os.getpid(), value

    def count(self):
        return self.calls


class _Consumer:
    """An actor that drains a Queue it was handed."""

    def drain(self, q, n):
        return [q.get(timeout=10) for _ in range(n)]


@pytest.fixture(scope="module")
def Worker(ray):
    return ray.remote(_Worker)


@pytest.fixture
def pool(Worker):
    """A pool of two fresh actors; the test gets (pool, actors)."""
    actors = [Worker.remote(), Worker.remote()]
    return ActorPool(list(actors)), actors


def call(actor, arg):
    delay, value = arg
    return actor.work.remote(delay, value)


def values_of(results):
    return [v for _, v in results]


# ---------------------------------------------------------------- the module


def test_util_exports_and_imports_start_nothing():
    import nanoray.util
    import nanoray.util.queue as q
    assert nanoray.util.__all__ == [
        "ActorPool", "as_completed", "deregister_serializer", "get_current_placement_group",
        "get_node_ip_address", "get_placement_group", "inspect_serializability",
        "list_named_actors", "map_unordered", "placement_group", "placement_group_table",
        "register_serializer", "remove_placement_group"]
    assert all(callable(getattr(nanoray.util, name)) for name in nanoray.util.__all__)
    assert nanoray.util.ActorPool is ActorPool
    assert issubclass(q.Empty, std_queue.Empty) and issubclass(q.Full, std_queue.Full)
    code = ("import nanoray, nanoray.util, nanoray.util.queue, nanoray.util.actor_pool, "
            "nanoray.util.scheduling_strategies, nanoray.util.serialization, nanoray.dag, "
            "nanoray.cloudpickle; "
            "print(nanoray.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- ActorPool


def test_map_returns_results_in_submission_order(pool, ray):
    p, actors = pool
    args = [(0.3, "a"), (0.0, "b"), (0.1, "c"), (0.0, "d"), (0.0, "e")]
    results = list(p.map(call, args))
    assert values_of(results) == ["a", "b", "c", "d", "e"]
    # The work was spread over both actors: two processes, five calls in all.
    assert len({pid for pid, _ in results}) == 2
    assert sum(ray.get([a.count.remote() for a in actors])) == 5
    assert not p.has_next() and p.has_free()


def test_map_unordered_yields_results_as_they_complete(pool):
    p, _ = pool
    # One actor sleeps on "slow" while the other runs the three quick calls.
    args = [(0.5, "slow"), (0.0, "x"), (0.0, "y"), (0.0, "z")]
    assert values_of(p.map_unordered(call, args)) == ["x", "y", "z", "slow"]


def test_map_is_lazy_in_collection_but_submits_everything(pool, ray):
    p, actors = pool
    it = p.map(call, [(0.0, i) for i in range(4)])
    assert p.has_next()                      # submitted before the first next()
    assert next(it)[1] == 0
    assert values_of(it) == [1, 2, 3]
    assert sum(ray.get([a.count.remote() for a in actors])) == 4


def test_map_discards_results_not_collected_before(pool):
    p, _ = pool
    p.submit(call, (0.0, "stale-1"))
    p.submit(call, (0.2, "stale-2"))
    p.submit(call, (0.0, "stale-3"))         # queued: both actors are busy
    assert values_of(p.map(call, [(0.0, "new-1"), (0.0, "new-2")])) == ["new-1", "new-2"]
    assert not p.has_next()


def test_get_next_and_get_next_unordered_with_nothing_pending(pool):
    p, _ = pool
    assert not p.has_next()
    with pytest.raises(StopIteration):
        p.get_next()
    with pytest.raises(StopIteration):
        p.get_next_unordered()


def test_get_next_timeout_leaves_the_call_pending(pool):
    p, _ = pool
    p.submit(call, (0.5, "slow"))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        p.get_next(timeout=0.05)
    assert time.monotonic() - t0 < 0.4
    assert p.has_next()
    assert p.get_next()[1] == "slow"
    assert not p.has_next()


def test_get_next_ignore_if_timedout_drops_the_call(pool):
    p, _ = pool
    p.submit(call, (0.5, "dropped"))
    p.submit(call, (0.0, "kept"))
    with pytest.raises(TimeoutError, match="ignored"):
        p.get_next(timeout=0.05, ignore_if_timedout=True)
    assert p.get_next()[1] == "kept"
    assert not p.has_next()
    with pytest.raises(StopIteration):
        p.get_next()
    # The dropped call's actor is free again (its next call queues behind it).
    assert p.pop_idle() is not None and p.pop_idle() is not None


def test_get_next_unordered_timeout(pool):
    p, _ = pool
    p.submit(call, (0.5, "slow"))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        p.get_next_unordered(timeout=0.05)
    assert time.monotonic() - t0 < 0.4
    assert p.get_next_unordered(timeout=10)[1] == "slow"


def test_get_next_unordered_ignore_if_timedout_drops_the_oldest_call(pool):
    # Ray 2.60 raises UnboundLocalError here (a bug); nanoray drops the
    # oldest pending call, as get_next() drops the one it waited for.
    p, _ = pool
    p.submit(call, (0.5, "first"))
    p.submit(call, (0.5, "second"))
    with pytest.raises(TimeoutError, match="ignored"):
        p.get_next_unordered(timeout=0.05, ignore_if_timedout=True)
    assert p.get_next_unordered()[1] == "second"
    assert not p.has_next()


def test_get_next_after_get_next_unordered_overtook_it(pool):
    p, _ = pool
    p.submit(call, (0.3, "slow"))
    p.submit(call, (0.0, "fast"))
    assert p.get_next_unordered()[1] == "fast"
    with pytest.raises(ValueError):
        p.get_next()                         # the later call was already returned
    assert p.get_next_unordered()[1] == "slow"


def test_submissions_wait_for_a_free_actor(Worker, ray):
    actor = Worker.remote()
    p = ActorPool([actor])
    assert p.has_free()
    for i in range(3):
        p.submit(call, (0.05, i))
    assert not p.has_free() and p.pop_idle() is None
    assert [p.get_next()[1] for _ in range(3)] == [0, 1, 2]
    assert not p.has_next() and p.has_free()
    assert ray.get(actor.count.remote()) == 3


def test_an_actor_is_busy_until_its_result_is_taken(Worker, ray):
    actor = Worker.remote()
    p = ActorPool([actor])
    p.submit(call, (0.0, 1))
    p.submit(call, (0.0, 2))
    # count() runs after the first call on the actor: that call is done, and
    # the second was not handed out, since the first result was not taken.
    assert ray.get(actor.count.remote()) == 1
    assert not p.has_free()
    assert p.get_next()[1] == 1
    assert p.get_next()[1] == 2 and p.has_free()


def test_pop_idle_and_push(Worker, pool):
    p, actors = pool
    a = p.pop_idle()
    b = p.pop_idle()
    assert {id(a), id(b)} == {id(x) for x in actors}
    assert p.pop_idle() is None and not p.has_free()
    p.submit(call, (0.0, "queued"))          # no actor: waits in the backlog
    assert not p.has_next()
    p.push(a)                                # the backlog takes the pushed actor
    assert p.has_next() and not p.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        p.push(a)                            # busy in the pool
    assert p.get_next()[1] == "queued"
    with pytest.raises(ValueError, match="already belongs"):
        p.push(a)                            # idle in the pool
    p.push(b)
    assert values_of(p.map(call, [(0.1, 1), (0.0, 2)])) == [1, 2]
    extra = Worker.remote()
    p.push(extra)
    assert len({pid for pid, _ in p.map(call, [(0.2, i) for i in range(3)])}) == 3


def test_a_failed_call_raises_from_get_next_and_its_actor_stays_in_use(Worker):
    p = ActorPool([Worker.remote()])
    p.submit(call, (0.0, KeyError("boom")))
    p.submit(call, (0.0, "after"))
    with pytest.raises(KeyError, match="boom"):
        p.get_next()
    assert p.get_next()[1] == "after"
    assert p.has_free()


def test_a_dead_actor_leaves_the_pool(pool, ray):
    p, (a, b) = pool
    ray.kill(a)
    p.submit(call, (0.0, "on b"))            # the last idle actor is handed out first
    p.submit(call, (0.0, "on a"))
    assert p.get_next()[1] == "on b"
    with pytest.raises(ray.exceptions.RayActorError):
        p.get_next()
    # Only b is left: later work all lands on it.
    assert len({pid for pid, _ in p.map(call, [(0.0, i) for i in range(4)])}) == 1
    assert p.pop_idle() is b and p.pop_idle() is None


def test_fn_must_return_object_refs(pool):
    # nanoray checks at submit (Ray fails later, in wait) and keeps the actor.
    p, _ = pool
    with pytest.raises(TypeError):
        p.submit(lambda actor, v: v, 1)
    assert p.has_free() and p.pop_idle() is not None and p.pop_idle() is not None


def test_fn_may_return_several_refs(pool):
    p, _ = pool
    results = list(p.map(lambda a, v: [a.work.remote(0, v), a.work.remote(0, v + 1)], [0, 10]))
    assert [values_of(r) for r in results] == [[0, 1], [10, 11]]


# ---------------------------------------------------------------- Queue


@pytest.fixture
def make_queue(ray):
    """Queue factory; every queue made is shut down at the end of the test."""
    made = []

    def make(*args, **kwargs):
        q = Queue(*args, **kwargs)
        made.append(q)
        return q
    yield make
    for q in made:
        if q.actor is not None:
            q.shutdown(force=True)


@nanoray.remote
def produce(q, items, delay=0.0):
    time.sleep(delay)
    for item in items:
        q.put(item)
    return len(items)


@nanoray.remote
def consume(q, n, delay=0.0):
    time.sleep(delay)
    return [q.get(timeout=10) for _ in range(n)]


def test_queue_is_fifo_and_reports_its_size(make_queue):
    q = make_queue()
    assert q.empty() and not q.full() and len(q) == 0 and q.size() == q.qsize() == 0
    for item in ["a", {"b": 1}, (2, 3), None]:
        q.put(item)
    assert len(q) == q.size() == q.qsize() == 4 and not q.empty()
    assert not q.full()                      # maxsize 0: never full
    assert [q.get() for _ in range(4)] == ["a", {"b": 1}, (2, 3), None]
    assert q.empty()


def test_full_and_empty_without_blocking(make_queue):
    q = make_queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and len(q) == 2
    with pytest.raises(Full):
        q.put(3, block=False)
    with pytest.raises(std_queue.Full):      # Full is a queue.Full, as in Ray
        q.put_nowait(3)
    assert len(q) == 2
    assert q.get(block=False) == 1 and q.get_nowait() == 2
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(std_queue.Empty):
        q.get_nowait()
    assert q.empty()


def test_full_and_empty_after_a_timeout(make_queue):
    q = make_queue(maxsize=1)
    q.put("only")
    t0 = time.monotonic()
    with pytest.raises(Full):
        q.put("more", timeout=0.2)
    waited = time.monotonic() - t0
    assert 0.15 <= waited < 2.0
    assert q.get(timeout=10) == "only"
    t0 = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    waited = time.monotonic() - t0
    assert 0.15 <= waited < 2.0
    # A timed-out get leaves nothing behind that would swallow a later item.
    q.put("later")
    assert q.get_nowait() == "later"


def test_timeout_zero_takes_what_is_there(make_queue):
    # As queue.Queue, and Ray on Python >= 3.12.  (Ray on 3.11 raises Empty /
    # Full even then: asyncio.wait_for(..., 0) gives up before starting.)
    q = make_queue(maxsize=1)
    q.put("room", timeout=0)
    with pytest.raises(Full):
        q.put("no room", timeout=0)
    assert q.get(timeout=0) == "room"
    with pytest.raises(Empty):
        q.get(timeout=0)


def test_negative_timeout_is_rejected(make_queue):
    q = make_queue()
    with pytest.raises(ValueError):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError):
        q.get(timeout=-0.5)
    assert q.empty()


def test_batches_are_all_or_nothing(make_queue):
    q = make_queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full):
        q.put_nowait_batch([3, 4])           # only one would fit: none is added
    assert len(q) == 2
    q.put_nowait_batch((3,))
    assert q.full()
    with pytest.raises(Empty):
        q.get_nowait_batch(4)                # only three there: none is taken
    assert len(q) == 3
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(1) == [3] and q.empty()
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch(1.0)
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)
    unbounded = make_queue()
    unbounded.put_nowait_batch(range(1000))
    assert unbounded.get_nowait_batch(1000) == list(range(1000))


def test_put_nowait_batch_takes_any_iterable(make_queue):
    # Ray 2.60 ships the iterable as is, so a generator fails to pickle.
    q = make_queue()
    q.put_nowait_batch(x * x for x in range(3))
    q.put_nowait_batch({"k": 1})
    assert q.get_nowait_batch(4) == [0, 1, 4, "k"]


def test_a_task_puts_items_the_driver_gets(make_queue, ray):
    q = make_queue()
    done = produce.remote(q, list(range(20)), 0.1)
    # The driver is already waiting when the task starts putting.
    assert [q.get(timeout=10) for _ in range(20)] == list(range(20))
    assert ray.get(done) == 20
    assert q.empty()


def test_a_blocked_put_resumes_when_a_task_gets(make_queue, ray):
    q = make_queue(maxsize=1)
    q.put("first")
    taken = consume.remote(q, 1, 0.1)
    q.put("second", timeout=10)              # blocks until the task took "first"
    assert ray.get(taken) == ["first"]
    assert q.get_nowait() == "second"


def test_a_queue_handed_to_an_actor(make_queue, ray):
    q = make_queue()
    consumer = ray.remote(_Consumer).remote()
    drained = consumer.drain.remote(q, 3)
    q.put_nowait_batch(["x", "y", "z"])
    assert ray.get(drained, timeout=10) == ["x", "y", "z"]
    assert q.empty()


def test_a_named_queue_is_found_by_name(make_queue, ray):
    q = make_queue(actor_options={"name": "util-test-queue"})
    q.put("by name")
    found = ray.get_actor("util-test-queue")
    assert ray.get(found.get_nowait.remote()) == "by name"
    assert q.empty()


def test_async_put_and_get(make_queue):
    q = make_queue(maxsize=1)

    async def main():
        await q.put_async("a")
        with pytest.raises(Full):
            await q.put_async("b", block=False)
        with pytest.raises(Full):
            await q.put_async("b", timeout=0.05)
        got = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.05)
        with pytest.raises(ValueError):
            await q.get_async(timeout=-1)
        # Two coroutines on one loop: the get waits for the put.
        late_get = asyncio.ensure_future(q.get_async(timeout=10))
        await asyncio.sleep(0.05)
        await q.put_async("c")
        return got, await late_get
    assert asyncio.run(main()) == ("a", "c")


def test_shutdown_ends_the_actor(make_queue, ray):
    for force in (False, True):
        q = make_queue()
        q.put(1)
        handle = q.actor
        q.shutdown(force=force)
        assert q.actor is None
        with pytest.raises(ray.exceptions.RayActorError) as info:
            ray.get(handle.qsize.remote(), timeout=10)
        assert not isinstance(info.value, ray.exceptions.GetTimeoutError)
        q.shutdown()                         # a second shutdown does nothing
