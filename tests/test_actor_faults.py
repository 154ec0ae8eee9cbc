"""Actor defects found in review, each pinned: creation with pending
arguments, per-caller ordering, failed creation, detached actors' slots,
kill under the region lock, options through get_actor, the runtime context
in __init__, task ids in async actors."""

import asyncio
import os
import time

import numpy as np
import pytest

from conftest import wait_gone

T = 10


def test_a_dropped_actor_whose_init_argument_is_pending_never_disturbs_other_tasks(ray):
    @ray.remote
    def slow(x, d):
        time.sleep(d)
        return x

    @ray.remote
    def pair(a, b):
        return (a, b)

    @ray.remote
    class A:
        def __init__(self, x):
            self.x = x
    arg = slow.remote(1, 0.5)
    b = slow.remote("B", 1.5)
    A.remote(arg)                     # handle dropped at once: the actor ends
    time.sleep(0.2)
    r = pair.remote(arg, b)           # may reuse the creation task's table entry
    t0 = time.monotonic()
    assert ray.get(r, timeout=T) == (1, "B")
    assert time.monotonic() - t0 > 0.8, "ran before its second argument was ready"


def test_one_callers_pending_argument_does_not_hold_up_another_caller(ray):
    @ray.remote
    class A:
        def ping(self):
            return "pong"

        def use(self, x):
            return ("used", x)

    @ray.remote
    def helper(a):
        return ray.get(a.ping.remote(), timeout=T)
    a = A.remote()
    assert ray.get(a.ping.remote(), timeout=T) == "pong"
    x = helper.remote(a)              # a task that itself calls the actor
    assert ray.get(a.use.remote(x), timeout=T) == ("used", "pong")


@pytest.mark.parametrize("kind", ["async", "threaded"])
def test_concurrent_actors_run_ready_calls_past_a_pending_one(ray, kind):
    @ray.remote
    def slow():
        time.sleep(2)
        return 1

    if kind == "async":
        @ray.remote
        class C:
            async def f(self, x=None):
                return x
    else:
        @ray.remote(max_concurrency=4)
        class C:
            def f(self, x=None):
                return x
    c = C.remote()
    ray.get(c.f.remote(), timeout=T)
    blocked = c.f.remote(slow.remote())
    t0 = time.monotonic()
    assert ray.get(c.f.remote(5), timeout=T) == 5
    assert time.monotonic() - t0 < 1.0
    assert ray.get(blocked, timeout=T) == 1


@pytest.mark.parametrize("lifetime", [None, "detached"])
def test_a_failed_creation_gives_back_its_name_and_cpus(ray, lifetime):
    import threading

    @ray.remote
    class A:
        def __init__(self, x=None):
            self.x = x

        def one(self):
            return 1
    before = ray.available_resources()["CPU"]
    with pytest.raises(TypeError):
        A.options(name="svc-" + str(lifetime), num_cpus=1, lifetime=lifetime).remote(
            threading.Lock())                        # cannot be pickled
    deadline = time.monotonic() + T
    while ray.available_resources()["CPU"] != before:
        assert time.monotonic() < deadline, "the failed actor's CPU was not given back"
        time.sleep(0.02)
    with pytest.raises(ValueError):
        ray.get_actor("svc-" + str(lifetime))
    again = A.options(name="svc-" + str(lifetime), lifetime=lifetime).remote()
    assert ray.get(again.one.remote(), timeout=T) == 1
    ray.kill(again)


def test_killed_detached_actors_give_their_slots_back(ray):
    @ray.remote
    class D:
        def pid(self):
            return os.getpid()
    stats = ray._api._backend.region.stats
    base = stats()["actors"]
    pids = []
    for _ in range(30):
        d = D.options(lifetime="detached").remote()
        pids.append(ray.get(d.pid.remote(), timeout=T))
        ray.kill(d)
        del d
    assert wait_gone(pids) == []
    deadline = time.monotonic() + T
    while stats()["actors"] > base:
        assert time.monotonic() < deadline, "%d dead detached actors keep their slots" % (
            stats()["actors"] - base)
        time.sleep(0.02)


def test_kill_never_lands_inside_a_critical_section(ray):
    @ray.remote
    def noop(x=None):
        return x

    @ray.remote(max_restarts=-1)
    class Busy:
        def pid(self):
            return os.getpid()

        def churn(self):
            while True:
                refs = [noop.remote(ray.put(np.ones(1000))) for _ in range(20)]
                del refs
    region = ray._api._backend.region
    repairs = region.stats()["lock_repairs"]
    b = Busy.remote()
    for i in range(25):
        ray.get(b.pid.remote(), timeout=T)
        b.churn.remote()
        time.sleep(0.03 + (i % 5) * 0.004)
        ray.kill(b, no_restart=False)
    ray.kill(b)
    del b
    assert ray.get([noop.remote(i) for i in range(50)], timeout=T) == list(range(50))
    assert region.stats()["lock_repairs"] == repairs
    assert region.arena_check() == 0


def test_handles_from_get_actor_keep_the_actors_options(ray):
    @ray.remote(max_restarts=1, max_task_retries=1)
    class Flaky:
        def __init__(self):
            self.calls = 0

        def crash_once(self, marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return "survived"
    marker = "/tmp/nanoray-flaky-%d" % os.getpid()
    if os.path.exists(marker):
        os.remove(marker)
    f = Flaky.options(name="flaky").remote()
    same = ray.get_actor("flaky")
    try:
        assert ray.get(same.crash_once.remote(marker), timeout=T) == "survived"
    finally:
        os.remove(marker)
    ray.kill(f)


def test_the_runtime_context_knows_the_actor_inside_init(ray):
    @ray.remote(max_restarts=1)
    class A:
        def __init__(self):
            ctx = ray.get_runtime_context()
            self.seen = (ctx.get_actor_id(), ctx.was_current_actor_reconstructed)

        def seen_in_init(self):
            return self.seen

        def actor_id(self):
            return ray.get_runtime_context().get_actor_id()

        def pid(self):
            return os.getpid()
    a = A.remote()
    actor_id, reconstructed = ray.get(a.seen_in_init.remote(), timeout=T)
    assert actor_id is not None and actor_id == ray.get(a.actor_id.remote(), timeout=T)
    assert reconstructed is False
    ray.kill(a, no_restart=False)
    deadline = time.monotonic() + T
    while True:
        try:
            assert ray.get(a.seen_in_init.remote(), timeout=T) == (actor_id, True)
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_each_coroutine_of_an_async_actor_sees_its_own_task_id(ray):
    @ray.remote
    class A:
        async def ids(self, delay):
            ctx = ray.get_runtime_context()
            before = ctx.get_task_id()
            await asyncio.sleep(delay)
            return before, ctx.get_task_id()
    a = A.remote()
    out = ray.get([a.ids.remote(0.2), a.ids.remote(0.1)], timeout=T)
    assert all(before == after for before, after in out)
    assert out[0][0] != out[1][0]


def test_an_actor_keeping_its_own_handle_still_exits_with_its_last_handle(ray):
    @ray.remote
    class Selfish:
        def __init__(self):
            self.me = ray.get_runtime_context().current_actor

        def pid(self):
            return os.getpid()

        def through_copy(self):
            @ray.remote
            def use(h):
                return ray.get(h.pid.remote(), timeout=T)
            return use.remote(self.me)          # a real handle travels with the task
    s = Selfish.remote()
    pid = ray.get(s.pid.remote(), timeout=T)
    inner = ray.get(s.through_copy.remote(), timeout=T)
    assert ray.get(inner, timeout=T) == pid
    del s, inner
    assert wait_gone([pid]) == [], "its own handle kept the actor alive"


def test_an_actor_needing_more_cpus_than_exist_stays_pending_in_tasks_too(ray):
    @ray.remote(num_cpus=4)
    class Big:
        def ping(self):
            return "pong"

    @ray.remote
    def make():
        import warnings
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            big = Big.remote()
        done, _ = ray.wait([big.ping.remote()], timeout=0.3)
        ray.kill(big)
        return [str(w.message) for w in seen], done
    seen, done = ray.get(make.remote(), timeout=T)
    assert done == [] and any("requires {'CPU': 4.0}" in m for m in seen), seen
    assert ray.available_resources()["CPU"] >= 0


def test_an_actor_killing_itself_is_not_killed_inside_the_lock(ray):
    @ray.remote
    class Quitter:
        def die(self):
            ray.kill(ray.get_runtime_context().current_actor)
            time.sleep(5)

    region = ray._api._backend.region
    repairs = region.stats()["lock_repairs"]
    q = Quitter.remote()
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(q.die.remote(), timeout=T)
    assert region.stats()["lock_repairs"] == repairs
    assert region.arena_check() == 0


def test_get_actor_id_still_works_while_an_orphaned_actor_drains(ray):
    @ray.remote
    class A:
        def slow_id(self, d):
            time.sleep(d)
            return ray.get_runtime_context().get_actor_id()

        def actor_id(self):
            return ray.get_runtime_context().get_actor_id()
    a = A.remote()
    expected = ray.get(a.actor_id.remote(), timeout=T)
    r = a.slow_id.remote(0.3)
    del a                                             # the queued call still runs
    assert ray.get(r, timeout=T) == expected


def test_actors_end_with_the_process_that_created_them_down_the_tree(ray):
    # Owner death by SIGKILL (an actor's, a pool worker's): the actors it
    # created end, and theirs in turn; a retired or idle worker is no death.
    import signal
    from nanoray import exceptions

    @ray.remote
    class Node:
        def spawn(self):
            self.kid = Node.remote()
            return self.kid

        def pid(self):
            return os.getpid()

    @ray.remote
    def make():
        n = Node.remote()
        ray.get(n.pid.remote())
        return n, os.getpid()

    def dead(handle):
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            try:
                ray.get(handle.pid.remote(), timeout=T)
            except exceptions.ActorDiedError as e:
                return "owner has died" in str(e)
            time.sleep(0.05)
        return False
    root = Node.remote()
    kid = ray.get(root.spawn.remote(), timeout=T)
    grandkid = ray.get(kid.spawn.remote(), timeout=T)
    os.kill(ray.get(root.pid.remote(), timeout=T), signal.SIGKILL)
    assert dead(kid) and dead(grandkid)

    made, worker = ray.get(make.remote(), timeout=T)
    time.sleep(0.3)                               # its worker idles: the actor lives on
    assert ray.get(made.pid.remote(), timeout=T) > 0
    os.kill(worker, signal.SIGKILL)
    assert dead(made)
