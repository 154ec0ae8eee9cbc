"""Actors with Ray's semantics: @remote classes and their handles, call order
and state, handles passed around, lifetimes (garbage collection, names,
namespaces, detached), options, the runtime context, failures and restarts,
threaded and async actors.

Every get() has a timeout so that a broken runtime fails a test instead of
hanging it.  Tests that need a runtime of their own (fresh) come last: fresh
stops the module's shared one.
"""

import asyncio
import concurrent.futures
import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

import nanoray
from conftest import wait_gone
from nanoray import exceptions

T = 10                  # seconds: the bound on every get()
DEATH_DEADLINE = 1.0    # a dead actor's pending calls fail within this many seconds


@nanoray.remote
def square(x):
    return x * x


@nanoray.remote
def slow_value(value, delay):
    time.sleep(delay)
    return value


class CounterImpl:
    """A plain class; Counter below is the actor class made from it."""

    def __init__(self, start=0, *, step=1):
        self.value = start
        self.step = step
        self.log = []

    def incr(self, by=None):
        self.value = self.value + (self.step if by is None else by)   # not in place: array
        return self.value                                               # arguments are read-only

    def read(self):
        return self.value

    def append(self, item):
        self.log.append(item)
        return list(self.log)

    def pid(self):
        return os.getpid()

    def sleep(self, seconds, tag=None):
        time.sleep(seconds)
        return tag

    def span(self, seconds):
        start = time.monotonic()
        time.sleep(seconds)
        return start, time.monotonic()

    def fail(self, message):
        raise ValueError(message)

    def die(self, code=1):
        os._exit(code)

    def stall_once(self, marker):
        """The first call writes its pid to marker and never returns; later ones return the pid."""
        if not os.path.exists(marker):
            with open(marker + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(marker + ".tmp", marker)
            time.sleep(3600)
        return os.getpid()

    def reconstructed(self):
        return nanoray.get_runtime_context().was_current_actor_reconstructed


Counter = nanoray.remote(CounterImpl)


@nanoray.remote
class Holder:
    """Keeps a handle it was given and calls through it later."""

    def __init__(self, handle=None):
        self.handle = handle

    def keep(self, handle):
        self.handle = handle
        return True

    def bump(self, by):
        return nanoray.get(self.handle.incr.remote(by), timeout=T)

    def pid(self):
        return os.getpid()


@nanoray.remote
class Splitter:
    @nanoray.method(num_returns=2)
    def split(self, x):
        return x, -x

    @nanoray.method(num_returns=3)
    def short(self):
        return 1, 2

    def whole(self, x):
        return x, -x


@nanoray.remote
class Introspect:
    def ids(self):
        ctx = nanoray.get_runtime_context()
        return {"actor": ctx.get_actor_id(), "task": ctx.get_task_id(), "job": ctx.get_job_id(),
                "node": ctx.get_node_id(), "reconstructed": ctx.was_current_actor_reconstructed,
                "pid": os.getpid()}

    def me(self):
        return nanoray.get_runtime_context().current_actor

    def pid(self):
        return os.getpid()


@nanoray.remote
class AsyncActor:
    def __init__(self):
        self.event = None

    def _event(self):
        if self.event is None:
            self.event = asyncio.Event()
        return self.event

    async def wait(self, i):
        await self._event().wait()
        return i, id(asyncio.get_running_loop()), os.getpid()

    async def release(self):
        self._event().set()
        return "released"

    async def square_via_task(self, x):
        return await square.remote(x)

    async def incr_via_actor(self, handle, by):
        return await handle.incr.remote(by)

    async def fail(self):
        await asyncio.sleep(0)
        raise KeyError("async oops")

    async def pid(self):
        return os.getpid()


def _call_until_alive(make_ref, timeout=T):
    """The result of make_ref() once the actor answers; calls sent while it is
    still being restarted may fail with RayActorError, as in Ray."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return nanoray.get(make_ref(), timeout=T)
        except exceptions.RayActorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_for_pid_file(path, timeout=T):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.01)
    with open(path) as f:
        return int(f.read())


def _wait_until_unnamed(ray, name, namespace=None, timeout=T):
    """After kill(), the name is released (get_actor raises ValueError) soon."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        assert time.monotonic() < deadline, "name %r still registered after kill" % name
        time.sleep(0.05)


# ---------------------------------------------------------------- basics


def test_remote_class_gives_a_handle_and_methods_give_refs(ray):
    h = Counter.remote(5)
    assert isinstance(h, ray.actor.ActorHandle)
    ref = h.incr.remote()
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref, timeout=T) == 6
    assert ray.get(h.incr.remote(10), timeout=T) == 16
    pid = ray.get(h.pid.remote(), timeout=T)
    assert pid != os.getpid()
    assert ray.get([h.pid.remote() for _ in range(5)], timeout=T) == [pid] * 5

    @ray.remote
    def task_pid(_):
        return os.getpid()
    assert pid not in ray.get([task_pid.remote(i) for i in range(8)], timeout=T), \
        "an actor call ran in a task worker or a task ran in the actor's process"
    other = Counter.remote()
    assert ray.get(other.pid.remote(), timeout=T) not in (pid, os.getpid())


def test_remote_returns_at_once_even_while_init_runs(ray):
    @ray.remote
    class SlowInit:
        def __init__(self):
            time.sleep(1.0)

        def ready(self):
            return "ready"
    t = time.monotonic()
    h = SlowInit.remote()
    ref = h.ready.remote()
    assert time.monotonic() - t < 0.5
    assert ray.get(ref, timeout=T) == "ready"


def test_using_an_actor_class_or_method_without_remote_is_an_error(ray):
    with pytest.raises(TypeError, match="remote"):
        Counter()
    h = Counter.remote()
    with pytest.raises(TypeError, match="remote"):
        h.incr()
    with pytest.raises(AttributeError):
        getattr(h, "no_such_method")
    assert ray.get(h.incr.remote(), timeout=T) == 1


def test_calls_from_one_caller_run_in_submission_order(ray):
    h = Counter.remote()
    refs = [h.append.remote(i) for i in range(200)]
    assert ray.get(refs[-1], timeout=T) == list(range(200))
    assert ray.get(refs[0], timeout=T) == [0]
    assert ray.get(refs[99], timeout=T) == list(range(100))

    # A call whose argument is not ready yet still goes before the later calls.
    h2 = Counter.remote()
    first = h2.append.remote(slow_value.remote("first", 0.3))
    second = h2.append.remote("second")
    assert ray.get(second, timeout=T) == ["first", "second"]
    assert ray.get(first, timeout=T) == ["first"]

    # A call whose argument failed raises that error and does not run.
    @ray.remote
    def boom():
        raise ZeroDivisionError("dependency failed")
    with pytest.raises(ZeroDivisionError, match="dependency failed"):
        ray.get(h2.append.remote(boom.remote()), timeout=T)
    assert ray.get(h2.append.remote("third"), timeout=T) == ["first", "second", "third"]


def test_calls_to_a_default_actor_do_not_overlap(ray):
    h = Counter.remote()
    spans = ray.get([h.span.remote(0.1) for _ in range(3)], timeout=T)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e0 <= s1, "calls overlapped on an actor with max_concurrency=1"


def test_state_persists_and_refs_as_arguments_are_resolved(ray):
    h = Counter.remote(ray.put(100), step=ray.put(5))       # refs to __init__ too
    assert ray.get(h.incr.remote(), timeout=T) == 105
    assert ray.get(h.incr.remote(by=ray.put(10)), timeout=T) == 115
    assert ray.get(h.incr.remote(square.remote(3)), timeout=T) == 124
    assert ray.get(h.read.remote(), timeout=T) == 124

    inner = ray.put("inside")
    (box,) = ray.get(h.append.remote({"ref": inner}), timeout=T)   # nested: arrives as a ref
    assert isinstance(box["ref"], ray.ObjectRef)
    assert ray.get(box["ref"], timeout=T) == "inside"


def test_arrays_in_and_out_of_an_actor(ray):
    h = Counter.remote(np.zeros(3))
    assert ray.get(h.incr.remote(np.arange(3.0)), timeout=T).tolist() == [0.0, 1.0, 2.0]
    big = np.arange(1 << 20, dtype=np.float64)
    h2 = Counter.remote(big)
    np.testing.assert_array_equal(ray.get(h2.read.remote(), timeout=T), big)
    got = ray.get(h2.incr.remote(ray.put(np.ones(1 << 20))), timeout=T)
    np.testing.assert_array_equal(got, big + 1)


def test_inherited_methods_are_callable(ray):
    class Base:
        def __init__(self):
            self.n = 1

        def base_method(self):
            return "base", self.n

    class Child(Base):
        def child_method(self):
            self.n += 1
            return "child", self.n
    h = ray.remote(Child).remote()
    assert ray.get(h.child_method.remote(), timeout=T) == ("child", 2)
    assert ray.get(h.base_method.remote(), timeout=T) == ("base", 2)


def test_an_actor_submits_tasks_calls_actors_and_gets(ray):
    @ray.remote
    class Orchestrator:
        def __init__(self):
            self.child = Counter.remote(1000)

        def run(self, n):
            squares = ray.get([square.remote(i) for i in range(n)], timeout=T)
            total = ray.get(self.child.incr.remote(sum(squares)), timeout=T)
            return squares, total, ray.get(self.child.pid.remote(), timeout=T), os.getpid()
    o = Orchestrator.remote()
    squares, total, child_pid, own_pid = ray.get(o.run.remote(6), timeout=T)
    assert squares == [0, 1, 4, 9, 16, 25]
    assert total == 1055
    assert len({child_pid, own_pid, os.getpid()}) == 3
    assert ray.get(o.run.remote(2), timeout=T)[1] == 1056


def test_default_actors_do_not_hold_cpus(ray):
    actors = [Counter.remote(i) for i in range(4)]         # more actors than CPUs
    assert ray.get([a.incr.remote() for a in actors], timeout=T) == [1, 2, 3, 4]
    assert len(set(ray.get([a.pid.remote() for a in actors], timeout=T))) == 4
    assert ray.get([square.remote(i) for i in range(4)], timeout=T) == [0, 1, 4, 9]


# ---------------------------------------------------------------- handles and lifetimes


def test_handles_work_in_tasks_in_other_actors_and_inside_values(ray):
    h = Counter.remote()

    @ray.remote
    def use(handle, box):
        a = ray.get(handle.incr.remote(1), timeout=T)
        b = ray.get(box["h"][0].incr.remote(10), timeout=T)
        return a, b
    assert ray.get(use.remote(h, {"h": [h]}), timeout=T) == (1, 11)

    holder = Holder.remote()
    assert ray.get(holder.keep.remote(h), timeout=T) is True
    assert ray.get(holder.bump.remote(100), timeout=T) == 111
    assert ray.get(h.read.remote(), timeout=T) == 111

    (copy,) = ray.get(ray.put([h]), timeout=T)
    assert ray.get(copy.incr.remote(1), timeout=T) == 112
    assert ray.get(Holder.remote(h).bump.remote(1000), timeout=T) == 1112   # to __init__


def test_actor_exits_after_its_queued_calls_when_the_last_handle_is_gone(ray):
    h = Counter.remote()
    pid = ray.get(h.pid.remote(), timeout=T)
    refs = [h.sleep.remote(0.1, i) for i in range(5)]
    del h
    assert ray.get(refs, timeout=T) == [0, 1, 2, 3, 4]
    assert wait_gone([pid]) == [], "the actor outlived its last handle"


def test_handles_held_by_a_task_or_an_actor_keep_the_actor_alive(ray):
    h = Counter.remote(7)
    pid = ray.get(h.pid.remote(), timeout=T)

    @ray.remote
    def later(box):
        time.sleep(0.5)
        return ray.get(box[0].incr.remote(1), timeout=T)
    ref = later.remote([h])
    holder = Holder.remote()
    ray.get(holder.keep.remote(h), timeout=T)
    holder_pid = ray.get(holder.pid.remote(), timeout=T)
    del h
    gc.collect()
    assert ray.get(ref, timeout=T) == 8                      # the task's copy works
    assert ray.get(holder.bump.remote(1), timeout=T) == 9    # and the actor's
    assert os.path.exists("/proc/%d" % pid)
    del holder
    assert wait_gone([holder_pid, pid]) == [], "actors outlived every handle"


def test_handles_held_by_an_actor_are_released_when_it_dies(ray):
    held = [Counter.remote(), Counter.remote()]
    held_pids = ray.get([c.pid.remote() for c in held], timeout=T)
    holders = [Holder.remote(c) for c in held]
    holder_pids = ray.get([hd.pid.remote() for hd in holders], timeout=T)
    assert ray.get([hd.bump.remote(1) for hd in holders], timeout=T) == [1, 1]
    del held
    gc.collect()
    time.sleep(0.2)
    assert wait_gone(held_pids, timeout=0) == held_pids, "collected while a holder has a handle"
    ray.kill(holders[0])                              # killed by the API
    os.kill(holder_pids[1], signal.SIGKILL)           # killed from outside
    assert wait_gone(holder_pids) == []
    assert wait_gone(held_pids) == [], "a dead actor's handles were never released"


def test_named_actor_get_actor_and_name_clash(ray):
    h = Counter.options(name="named-counter").remote(1)
    same = ray.get_actor("named-counter")
    assert isinstance(same, ray.actor.ActorHandle)
    assert ray.get(same.incr.remote(), timeout=T) == 2
    assert ray.get(h.read.remote(), timeout=T) == 2
    pid = ray.get(h.pid.remote(), timeout=T)
    with pytest.raises(ValueError):
        Counter.options(name="named-counter").remote()

    @ray.remote
    def from_a_task():
        return ray.get(ray.get_actor("named-counter").incr.remote(10), timeout=T)
    assert ray.get(from_a_task.remote(), timeout=T) == 12

    ray.kill(same)
    assert wait_gone([pid]) == []
    _wait_until_unnamed(ray, "named-counter")
    reused = Counter.options(name="named-counter").remote(50)       # the name is free again
    assert ray.get(reused.read.remote(), timeout=T) == 50
    ray.kill(reused)


def test_a_named_actor_outlives_its_handles(ray):
    # The spec's lifetime rule (Ray >= 2 instead collects a non-detached named
    # actor with its last handle, as for an anonymous one).
    h = Counter.options(name="kept-by-name").remote(1)
    assert ray.get(h.incr.remote(), timeout=T) == 2
    pid = ray.get(h.pid.remote(), timeout=T)
    del h
    gc.collect()
    time.sleep(0.3)
    again = ray.get_actor("kept-by-name")
    assert ray.get(again.read.remote(), timeout=T) == 2
    assert ray.get(again.pid.remote(), timeout=T) == pid
    ray.kill(again)
    assert wait_gone([pid]) == []


def test_get_actor_of_an_unknown_name_is_a_value_error(ray):
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor")
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor", namespace="no-such-namespace")


def test_namespaces_separate_names(ray):
    a = Counter.options(name="shared-name", namespace="ns-a").remote(1)
    b = Counter.options(name="shared-name", namespace="ns-b").remote(2)
    assert ray.get(ray.get_actor("shared-name", namespace="ns-a").read.remote(), timeout=T) == 1
    assert ray.get(ray.get_actor("shared-name", namespace="ns-b").read.remote(), timeout=T) == 2
    with pytest.raises(ValueError):
        ray.get_actor("shared-name")              # not in the driver's namespace
    pids = ray.get([a.pid.remote(), b.pid.remote()], timeout=T)
    ray.kill(a)
    ray.kill(b)
    assert wait_gone(pids) == []


def test_get_if_exists_returns_the_existing_actor(ray):
    a = Counter.options(name="singleton", get_if_exists=True).remote(10)
    b = Counter.options(name="singleton", get_if_exists=True).remote(99)
    assert ray.get(b.incr.remote(), timeout=T) == 11
    assert ray.get(a.incr.remote(), timeout=T) == 12
    pid = ray.get(a.pid.remote(), timeout=T)
    assert ray.get(b.pid.remote(), timeout=T) == pid
    ray.kill(a)
    assert wait_gone([pid]) == []


def test_detached_actor_outlives_its_handles_until_killed(ray):
    h = Counter.options(name="detached-counter", lifetime="detached").remote(3)
    assert ray.get(h.incr.remote(), timeout=T) == 4
    pid = ray.get(h.pid.remote(), timeout=T)
    del h
    gc.collect()
    time.sleep(0.3)
    again = ray.get_actor("detached-counter")
    assert ray.get(again.read.remote(), timeout=T) == 4
    assert ray.get(again.pid.remote(), timeout=T) == pid
    ray.kill(again)
    assert wait_gone([pid]) == []
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(again.read.remote(), timeout=T)


# ---------------------------------------------------------------- options


def test_unknown_and_task_only_options_are_value_errors(ray):
    class Plain:
        pass
    with pytest.raises(ValueError, match="Invalid option"):
        ray.remote(bogus=1)(Plain)
    with pytest.raises(ValueError, match="Invalid option"):
        Counter.options(bogus=1)
    with pytest.raises(ValueError):
        ray.remote(max_retries=1)(Plain)            # an option of tasks, not actors
    with pytest.raises(ValueError):
        ray.remote(num_returns=2)(Plain)
    with pytest.raises(ValueError):
        Counter.options(lifetime="forever")


def test_options_on_the_decorator_and_on_options(ray):
    @ray.remote(num_cpus=1, max_concurrency=2, max_restarts=0, max_task_retries=0,
                max_pending_calls=10)
    class Configured:
        def ping(self):
            return "pong"
    assert ray.get(Configured.remote().ping.remote(), timeout=T) == "pong"
    h = Configured.options(num_cpus=0, max_concurrency=1).remote()
    assert ray.get(h.ping.remote(), timeout=T) == "pong"


def test_num_cpus_reserves_cpus_for_the_actors_lifetime(ray):
    h = Counter.options(num_cpus=2).remote()
    pid = ray.get(h.pid.remote(), timeout=T)
    deadline = time.monotonic() + T
    while ray.available_resources().get("CPU", 0.0) != 0.0:
        assert time.monotonic() < deadline, "the actor's 2 CPUs were not reserved"
        time.sleep(0.05)
    ref = square.remote(4)
    ready, _ = ray.wait([ref], timeout=0.5)
    assert ready == [], "a task ran while an actor held every CPU"
    start = time.monotonic()
    ray.kill(h)
    assert ray.get(ref, timeout=T) == 16
    assert time.monotonic() - start < 2.0, "the killed actor's CPUs came back late"
    assert wait_gone([pid]) == []


def test_max_concurrency_runs_calls_at_once_on_threads(ray):
    @ray.remote(max_concurrency=4)
    class Threaded:
        def __init__(self):
            self.barrier = threading.Barrier(4, timeout=T)

        def meet(self):
            index = self.barrier.wait()           # returns only when all 4 calls are in
            return index, threading.get_ident(), os.getpid()
    h = Threaded.remote()
    results = ray.get([h.meet.remote() for _ in range(4)], timeout=T)
    assert sorted(r[0] for r in results) == [0, 1, 2, 3]
    assert len({r[1] for r in results}) == 4
    assert len({r[2] for r in results}) == 1

    h2 = Counter.options(max_concurrency=3).remote()
    spans = ray.get([h2.span.remote(0.3) for _ in range(3)], timeout=T)
    assert max(s for s, _ in spans) < min(e for _, e in spans), "calls did not overlap"


def test_max_pending_calls_refuses_extra_calls(ray):
    h = Counter.options(max_pending_calls=2).remote()
    ray.get(h.pid.remote(), timeout=T)
    a = h.sleep.remote(0.5, "a")
    b = h.sleep.remote(0.0, "b")
    with pytest.raises(exceptions.PendingCallsLimitExceeded):
        h.sleep.remote(0.0, "c")
    assert ray.get([a, b], timeout=T) == ["a", "b"]
    assert ray.get(h.sleep.remote(0.0, "d"), timeout=T) == "d"


def test_method_num_returns(ray):
    h = Splitter.remote()
    a, b = h.split.remote(3)
    assert ray.get([a, b], timeout=T) == [3, -3]
    assert ray.get(h.whole.remote(4), timeout=T) == (4, -4)
    refs = h.short.remote()
    assert len(refs) == 3
    with pytest.raises(ValueError):
        ray.get(refs[0], timeout=T)
    assert ray.get(h.whole.remote(5), timeout=T) == (5, -5)   # still serving


# ---------------------------------------------------------------- runtime context


def test_runtime_context_in_actors_tasks_and_the_driver(ray):
    ctx = ray.get_runtime_context()
    assert ctx.get_actor_id() is None
    a, b = Introspect.remote(), Introspect.remote()
    first, second = ray.get([a.ids.remote(), a.ids.remote()], timeout=T)
    other = ray.get(b.ids.remote(), timeout=T)
    assert isinstance(first["actor"], str) and first["actor"]
    assert first["actor"] == second["actor"] != other["actor"]
    assert isinstance(first["task"], str) and first["task"] != second["task"]
    assert first["job"] == other["job"] == ctx.get_job_id()
    assert first["node"] == other["node"] == ctx.get_node_id()
    assert first["reconstructed"] is False

    @ray.remote
    def task_actor_id():
        return ray.get_runtime_context().get_actor_id()
    assert ray.get(task_actor_id.remote(), timeout=T) is None

    me = ray.get(a.me.remote(), timeout=T)        # current_actor: a handle to itself
    assert isinstance(me, ray.actor.ActorHandle)
    assert ray.get(me.pid.remote(), timeout=T) == first["pid"]
    assert ray.get(me.ids.remote(), timeout=T)["actor"] == first["actor"]


# ---------------------------------------------------------------- errors and deaths


def test_method_exception_reraises_and_the_actor_keeps_serving(ray):
    h = Counter.remote()
    assert ray.get(h.incr.remote(5), timeout=T) == 5
    pid = ray.get(h.pid.remote(), timeout=T)
    with pytest.raises(ValueError) as info:
        ray.get(h.fail.remote("bad input 42"), timeout=T)
    assert isinstance(info.value, exceptions.RayTaskError)
    assert not isinstance(info.value, exceptions.RayActorError)
    text = str(info.value)
    assert "bad input 42" in text and "fail" in text
    assert "raise ValueError(message)" in text      # the remote traceback's source line
    assert ray.get(h.incr.remote(1), timeout=T) == 6
    assert ray.get(h.pid.remote(), timeout=T) == pid


def test_repr_of_the_actor_class_is_used_in_error_messages(ray):
    @ray.remote
    class Tagged:
        def __init__(self, tag):
            self.tag = tag

        def __repr__(self):
            return "Tagged(tag=%s)" % self.tag

        def fail(self):
            raise RuntimeError("oops")
    with pytest.raises(RuntimeError) as info:
        ray.get(Tagged.remote("worker-7").fail.remote(), timeout=T)
    assert "Tagged(tag=worker-7)" in str(info.value)


def test_exception_in_init_makes_every_call_raise_actor_died(ray):
    @ray.remote
    class BadInit:
        def __init__(self, code):
            raise ZeroDivisionError("init failed with code %d" % code)

        def ping(self):
            return "pong"
    assert issubclass(exceptions.ActorDiedError, exceptions.RayActorError)
    assert issubclass(exceptions.RayActorError, exceptions.RayError)
    h = BadInit.remote(42)
    for _ in range(2):
        with pytest.raises(exceptions.ActorDiedError) as info:
            ray.get(h.ping.remote(), timeout=T)
        text = str(info.value)
        assert "init failed with code 42" in text and "ZeroDivisionError" in text


def test_sigkill_fails_pending_and_later_calls_quickly(ray):
    h = Counter.remote()
    pid = ray.get(h.pid.remote(), timeout=T)
    pending = [h.sleep.remote(3600), h.incr.remote(), h.incr.remote()]
    time.sleep(0.2)
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for ref in pending:
        with pytest.raises(exceptions.ActorDiedError):
            ray.get(ref, timeout=T)
    assert time.monotonic() - start < DEATH_DEADLINE
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.incr.remote(), timeout=T)
    assert wait_gone([pid]) == []


def test_os_exit_in_a_method_kills_the_actor(ray):
    h = Counter.remote()
    bystander = Counter.remote(100)
    pid = ray.get(h.pid.remote(), timeout=T)
    died = h.die.remote()
    queued = h.incr.remote()
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(died, timeout=T)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(queued, timeout=T)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.incr.remote(), timeout=T)
    assert wait_gone([pid]) == []
    assert ray.get(bystander.incr.remote(), timeout=T) == 101


def test_kill_fails_pending_and_later_calls(ray):
    h = Counter.remote()
    pid = ray.get(h.pid.remote(), timeout=T)
    pending = [h.sleep.remote(3600), h.incr.remote()]
    time.sleep(0.2)
    start = time.monotonic()
    ray.kill(h)
    for ref in pending:
        with pytest.raises(exceptions.ActorDiedError) as info:
            ray.get(ref, timeout=T)
        assert isinstance(info.value, exceptions.RayActorError)
    assert time.monotonic() - start < DEATH_DEADLINE
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.incr.remote(), timeout=T)
    assert wait_gone([pid]) == []
    ray.kill(h)                                   # killing a dead actor is harmless
    with pytest.raises(ValueError):
        ray.kill(ray.put(1))                      # only actors can be killed


def test_results_outlive_the_actor_that_made_them(ray):
    h = Counter.remote(np.arange(1 << 20))
    pid = ray.get(h.pid.remote(), timeout=T)
    big, small = h.read.remote(), h.append.remote("x")
    assert ray.get(small, timeout=T) == ["x"]
    ray.get(big, timeout=T)
    ray.kill(h)
    assert wait_gone([pid]) == []
    np.testing.assert_array_equal(ray.get(big, timeout=T), np.arange(1 << 20))
    assert ray.get(small, timeout=T) == ["x"]


def test_actor_calls_leave_nothing_in_the_store(ray):
    if not hasattr(ray, "_api"):
        pytest.skip("nanoray's store counters")
    from conftest import store_objects
    warm = Counter.remote()                      # the class is exported once, as for functions
    ray.get(warm.incr.remote(), timeout=T)
    ray.kill(warm)
    before = store_objects()
    h = Counter.remote(ray.put(np.ones(1000)))
    pid = ray.get(h.pid.remote(), timeout=T)
    refs = [h.incr.remote(ray.put(np.ones(1000))) for _ in range(50)]
    ray.get(refs, timeout=T)
    del refs, h
    assert wait_gone([pid]) == []
    assert store_objects() == before


def test_exit_actor_ends_the_actor_without_a_restart(ray):
    @ray.remote(max_restarts=2)
    class Quitter:
        def pid(self):
            return os.getpid()

        def quit(self):
            ray.actor.exit_actor()
            return "not reached"
    h = Quitter.remote()
    pid = ray.get(h.pid.remote(), timeout=T)
    with pytest.raises(exceptions.RayActorError):
        ray.get(h.quit.remote(), timeout=T)
    assert wait_gone([pid]) == []
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.pid.remote(), timeout=T)
    with pytest.raises(TypeError):
        ray.actor.exit_actor()                    # only inside an actor


def test_ray_terminate_runs_queued_calls_then_exits(ray):
    h = Counter.remote()
    pid = ray.get(h.pid.remote(), timeout=T)
    queued = [h.sleep.remote(0.2, "one"), h.append.remote("two")]
    h.__ray_terminate__.remote()
    assert ray.get(queued, timeout=T) == ["one", ["two"]]
    assert wait_gone([pid]) == []
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.incr.remote(), timeout=T)


def test_max_restarts_reruns_init_in_a_new_process(ray):
    h = Counter.options(max_restarts=2).remote(10)
    assert ray.get(h.incr.remote(), timeout=T) == 11
    assert ray.get(h.reconstructed.remote(), timeout=T) is False
    pids = [ray.get(h.pid.remote(), timeout=T)]
    for _ in range(2):
        os.kill(pids[-1], signal.SIGKILL)
        assert wait_gone(pids[-1:]) == []
        pids.append(_call_until_alive(h.pid.remote))
        assert pids[-1] not in pids[:-1]
        assert ray.get(h.incr.remote(), timeout=T) == 11       # __init__(10) ran again
        assert ray.get(h.reconstructed.remote(), timeout=T) is True
    os.kill(pids[-1], signal.SIGKILL)                          # no restarts left
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.incr.remote(), timeout=T)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.incr.remote(), timeout=T)
    assert wait_gone(pids) == []


def test_max_task_retries_reruns_the_interrupted_call_after_a_restart(ray, tmp_path):
    h = Counter.options(max_restarts=1, max_task_retries=1).remote()
    marker = str(tmp_path / "pid")
    ref = h.stall_once.remote(marker)
    first = _wait_for_pid_file(marker)
    os.kill(first, signal.SIGKILL)
    second = ray.get(ref, timeout=T)
    assert second != first
    assert ray.get(h.pid.remote(), timeout=T) == second
    assert ray.get(h.reconstructed.remote(), timeout=T) is True
    ray.kill(h)
    assert wait_gone([first, second]) == []


def test_kill_with_no_restart_false_restarts_a_restartable_actor(ray):
    h = Counter.options(max_restarts=1).remote(1)
    first = ray.get(h.pid.remote(), timeout=T)
    ray.get(h.incr.remote(), timeout=T)
    ray.kill(h, no_restart=False)
    assert wait_gone([first]) == []
    second = _call_until_alive(h.pid.remote)
    assert second != first
    assert ray.get(h.read.remote(), timeout=T) == 1
    ray.kill(h)                                   # no_restart=True: gone for good
    assert wait_gone([second]) == []
    time.sleep(0.3)                               # no restart comes
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(h.read.remote(), timeout=T)


# ---------------------------------------------------------------- async actors and futures


def test_async_actor_runs_many_calls_at_once_on_one_loop(ray):
    h = AsyncActor.remote()
    waiting = [h.wait.remote(i) for i in range(50)]
    ready, _ = ray.wait(waiting, timeout=0.3)
    assert ready == [], "a waiter finished before the event was set"
    assert ray.get(h.release.remote(), timeout=T) == "released"
    results = ray.get(waiting, timeout=T)
    assert [r[0] for r in results] == list(range(50))
    assert len({r[1] for r in results}) == 1
    assert {r[2] for r in results} == {ray.get(h.pid.remote(), timeout=T)}


def test_await_refs_inside_async_methods(ray):
    h = AsyncActor.remote()
    c = Counter.remote(1)
    assert ray.get(h.square_via_task.remote(7), timeout=T) == 49
    assert ray.get(h.incr_via_actor.remote(c, 5), timeout=T) == 6
    with pytest.raises(KeyError, match="async oops"):
        ray.get(h.fail.remote(), timeout=T)
    assert ray.get(h.square_via_task.remote(3), timeout=T) == 9


def test_await_actor_refs_in_driver_asyncio_code(ray):
    h = Counter.remote()

    async def main():
        first = await h.incr.remote(5)
        rest = await asyncio.gather(*[h.incr.remote(1) for _ in range(3)])
        return first, rest
    assert asyncio.run(asyncio.wait_for(main(), T)) == (5, [6, 7, 8])


def test_ref_future_is_a_concurrent_future(ray):
    h = Counter.remote()
    fut = h.incr.remote(2).future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=T) == 2
    failing = h.fail.remote("through a future").future()
    with pytest.raises(ValueError, match="through a future"):
        failing.result(timeout=T)


# ---------------------------------------------------------------- runtimes of their own


def test_shutdown_stops_every_actor_including_detached_ones(fresh):
    ray = fresh(num_cpus=2)
    plain = Counter.remote()
    named = Counter.options(name="n-shutdown").remote()
    detached = Counter.options(name="d-shutdown", lifetime="detached").remote()
    pids = ray.get([a.pid.remote() for a in (plain, named, detached)], timeout=T)
    assert len(set(pids)) == 3
    ray.shutdown()
    assert wait_gone(pids) == []


def test_more_actors_at_once_than_one_spawn_batch_all_start(ray):
    # The zygote takes spawn requests in batches of 64: the rest must follow.
    actors = [Counter.remote(i) for i in range(80)]
    assert ray.get([a.read.remote() for a in actors], timeout=60) == list(range(80))
    pids = ray.get([a.pid.remote() for a in actors], timeout=T)
    assert len(set(pids)) == 80
    del actors
    assert wait_gone(pids) == []


def test_list_named_actors(ray):
    a = Counter.options(name="listed-a").remote()
    b = Counter.options(name="listed-b", namespace="elsewhere").remote()
    ray.get([a.read.remote(), b.read.remote()], timeout=T)
    names = ray.util.list_named_actors()
    assert "listed-a" in names and "listed-b" not in names
    everywhere = ray.util.list_named_actors(all_namespaces=True)
    assert {"name": "listed-b", "namespace": "elsewhere"} in everywhere
    ray.kill(a)
    ray.kill(b)
    deadline = time.monotonic() + T
    while "listed-a" in ray.util.list_named_actors():
        assert time.monotonic() < deadline, "a killed actor's name stayed listed"
        time.sleep(0.02)
