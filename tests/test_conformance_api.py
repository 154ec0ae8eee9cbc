"""Ray Core's everyday API, written once against the public API only
(``ray`` is the nanoray module here) and run on both backends: on
nanoray's own, then on Ray when it is installed (conftest's `backend`).
Objects, tasks, errors, wait, actors, async, cancel, retries."""

import asyncio
import os
import sys
import time

import numpy as np
import pytest

from conftest import conformance_fixtures, on_ray
from nanoray import exceptions


ray = conformance_fixtures()[0]


# -- objects -------------------------------------------------------------------

def test_put_and_get_keep_values_and_refs_are_nanoray_refs(ray):
    values = [1, "text", {"a": [1, 2]}, None, b"\x00" * 100, np.arange(1000.0)]
    refs = [ray.put(v) for v in values]
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    got = ray.get(refs)
    assert got[:5] == values[:5]
    np.testing.assert_array_equal(got[5], values[5])
    assert ray.get(refs[0]) == 1
    assert refs[0] == refs[0] and refs[0] != refs[1] and len({refs[0], refs[0]}) == 1
    assert len(refs[0].hex()) > 0 and "ObjectRef(" in repr(refs[0])


def test_arrays_from_the_store_are_read_only_and_writable_asks_for_a_copy(ray):
    ref = ray.put(np.zeros(1000))
    a = ray.get(ref)
    with pytest.raises(ValueError):
        a[0] = 1
    w = ray.get(ref, writable=True)
    w[0] = 7
    assert ray.get(ref)[0] == 0                   # the stored object never changes


def test_get_rejects_what_is_not_a_ref(ray):
    with pytest.raises(ValueError):
        ray.get(1)
    with pytest.raises(ValueError):
        ray.get([ray.put(1), 2])


# -- tasks ---------------------------------------------------------------------

def test_top_level_refs_are_resolved_and_nested_refs_arrive_as_refs(ray):
    @ray.remote
    def inspect(x, box):
        inner = box[0]
        return x * 2, isinstance(inner, ray.ObjectRef), ray.get(inner) + 1
    r = ray.put(21)
    assert ray.get(inspect.remote(r, [ray.put(9)])) == (42, True, 10)

    @ray.remote
    def add(a, b):
        return a + b
    assert ray.get(add.remote(add.remote(1, 2), b=add.remote(3, 4))) == 10


def test_num_returns_and_none(ray):
    @ray.remote(num_returns=3)
    def three():
        return 1, 2, 3
    refs = three.remote()
    assert isinstance(refs, list) and ray.get(refs) == [1, 2, 3]

    @ray.remote(num_returns=0)
    def nothing():
        pass
    assert nothing.remote() is None
    assert ray.get(three.options(num_returns=1).remote()) == (1, 2, 3)


def test_a_task_returning_refs_keeps_their_objects_alive(ray):
    @ray.remote
    def make():
        return [ray.put(np.full(10, 5.0))]
    inner = ray.get(make.remote())[0]
    time.sleep(0.2)
    assert ray.get(inner).sum() == 50.0


def test_tasks_submit_and_wait_for_tasks(ray):
    @ray.remote
    def leaf(i):
        return i * i

    @ray.remote
    def fan_out(n):
        return sum(ray.get([leaf.remote(i) for i in range(n)]))
    assert ray.get([fan_out.remote(10) for _ in range(4)], timeout=60) == [285] * 4


def test_map_gives_each_item_the_ref_f_remote_would(ray):
    # nanoray's addition (batched submission); a loop of f.remote on Ray.
    @ray.remote
    def f(x, k=1):
        if x == 3:
            raise KeyError(x)
        return x * k
    refs = f.map(range(6), [10] * 6)
    assert len(refs) == 6 and all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs[:3] + refs[4:], timeout=60) == [0, 10, 20, 40, 50]
    with pytest.raises(KeyError):
        ray.get(refs[3], timeout=60)
    assert ray.get(f.options(num_cpus=0.5).map([ray.put(7)]), timeout=60) == [7]
    with pytest.raises(TypeError):
        f.map(range(2), range(2), range(2))


def test_remote_functions_and_classes_are_not_called_directly(ray):
    @ray.remote
    def f(x):
        return x

    @ray.remote
    class A:
        pass
    with pytest.raises(TypeError, match="remote"):
        f(1)
    with pytest.raises(TypeError):
        A()
    with pytest.raises(TypeError):
        f.remote(1, 2)                             # the signature is checked at .remote()

    async def g():
        return 1
    with pytest.raises(ValueError, match="async def"):
        ray.remote(g)                              # refused at once, not at its first run


# -- errors ----------------------------------------------------------------------

class CustomError(Exception):
    pass


def test_a_task_error_is_the_original_type_and_flows_to_dependents(ray):
    @ray.remote
    def fails():
        raise CustomError("broken here")

    @ray.remote
    def after(x):
        return x
    ref = fails.remote()
    with pytest.raises(CustomError, match="broken here") as info:
        ray.get(ref)
    assert isinstance(info.value, exceptions.RayTaskError)
    assert "fails" in str(info.value)
    with pytest.raises(CustomError) as info:
        ray.get(after.remote(ref))
    # Named by the task that could not run, and by the one that failed.
    text = str(info.value)
    assert "after()" in text and "could not be computed" in text and "broken here" in text
    assert text.index("after()") < text.index("fails()")


def test_get_and_wait_timeouts(ray):
    @ray.remote
    def slow():
        time.sleep(5)
    ref = slow.remote()
    t0 = time.monotonic()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.2)
    assert time.monotonic() - t0 < 4
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
    ready, rest = ray.wait([ref], timeout=0.1)
    assert ready == [] and rest == [ref]
    if on_ray():                         # a cancel racing its reply can abort Ray's driver
        ray.get(ref, timeout=30)         # (conftest.ray_cancel_race): let it end instead
    else:
        ray.cancel(ref, force=True)


def test_wait_returns_the_first_ready_in_order(ray):
    @ray.remote
    def sleep_then(s, v):
        time.sleep(s)
        return v
    fast, slow = sleep_then.remote(0, "fast"), sleep_then.remote(3, "slow")
    ready, rest = ray.wait([slow, fast], num_returns=1, timeout=30)
    assert ready == [fast] and rest == [slow]
    ready, rest = ray.wait([slow, fast], num_returns=2, timeout=30)
    assert ready == [slow, fast] and rest == []
    with pytest.raises(ValueError):
        ray.wait([fast, fast])
    with pytest.raises(ValueError):
        ray.wait([fast], num_returns=2)


def test_a_crashed_worker_is_retried_or_fails_with_worker_crashed(ray, tmp_path):
    marker = str(tmp_path / "crashed-once")

    @ray.remote(max_retries=2)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "second try"
    assert ray.get(crash_once.remote(marker), timeout=60) == "second try"

    @ray.remote(max_retries=0)
    def always():
        os._exit(1)
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(always.remote(), timeout=60)


def test_cancel_a_queued_task(ray, tmp_path):
    @ray.remote
    def hold():
        time.sleep(3)

    @ray.remote
    def never(path):
        open(path, "w").close()
    holders = [hold.remote() for _ in range(2)]
    flag = str(tmp_path / "ran")
    ref = never.remote(flag)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    ray.get(holders, timeout=30)
    assert not os.path.exists(flag)


# -- actors ----------------------------------------------------------------------

def test_actor_state_order_and_multiple_returns(ray):
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.n = start

        def add(self, k=1):
            self.n += k
            return self.n

        @ray.method(num_returns=2)
        def pair(self):
            return self.n, -self.n
    c = Counter.remote(10)
    assert isinstance(c, ray.actor.ActorHandle)
    assert ray.get([c.add.remote() for _ in range(5)]) == [11, 12, 13, 14, 15]
    a, b = c.pair.remote()
    assert ray.get([a, b]) == [15, -15]
    assert ray.get(c.add.options(num_returns=1).remote(k=5)) == 20


def test_an_actor_method_error_leaves_the_actor_alive(ray):
    @ray.remote
    class Fragile:
        def __init__(self):
            self.calls = 0

        def maybe(self, fail):
            self.calls += 1
            if fail:
                raise CustomError("method broke")
            return self.calls
    f = Fragile.remote()
    with pytest.raises(CustomError):
        ray.get(f.maybe.remote(True))
    assert ray.get(f.maybe.remote(False)) == 2


def test_a_failing_constructor_and_a_killed_actor_raise_actor_errors(ray):
    @ray.remote
    class Broken:
        def __init__(self):
            raise CustomError("no init")

        def ping(self):
            return "pong"
    with pytest.raises(exceptions.RayActorError):
        ray.get(Broken.remote().ping.remote(), timeout=30)

    @ray.remote
    class Alive:
        def ping(self):
            return "pong"
    a = Alive.remote()
    assert ray.get(a.ping.remote(), timeout=30) == "pong"
    ray.kill(a)
    if on_ray():              # Ray's kill is asynchronous: a call right after may still run
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ray.get(a.ping.remote(), timeout=30)
            except exceptions.RayActorError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the killed actor kept answering")
    else:
        with pytest.raises(exceptions.RayActorError):
            ray.get(a.ping.remote(), timeout=30)
    with pytest.raises(ValueError):
        ray.kill("not an actor")


def test_a_restarting_actor_that_dies_mid_call_fails_it_as_unavailable(ray):
    # The call is not retried (max_task_retries=0) while the actor restarts:
    # ActorUnavailableError, as in Ray; once no restart is left, ActorDiedError.
    @ray.remote(max_restarts=1)
    class Fragile:
        def die(self):
            os._exit(1)

        def pid(self):
            return os.getpid()
    actor = Fragile.remote()
    first = ray.get(actor.pid.remote(), timeout=60)
    with pytest.raises(exceptions.ActorUnavailableError) as info:
        ray.get(actor.die.remote(), timeout=60)
    assert isinstance(info.value, exceptions.RayActorError)
    assert not isinstance(info.value, exceptions.ActorDiedError)
    assert ray.get(actor.pid.remote(), timeout=60) != first     # restarted
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.die.remote(), timeout=60)


def test_sys_exit_in_an_actor_method_is_a_crash_unless_its_code_is_0(ray, tmp_path):
    # Ray reads the code as Python does: 0 is an exit on purpose (no restart,
    # as exit_actor()); any other code, or none, is a crash: the actor is
    # restarted and the call retried while max_restarts and max_task_retries allow.
    @ray.remote(max_restarts=-1, max_task_retries=-1)
    class A:
        def exit_once(self, marker, *code):
            if not os.path.exists(marker):
                open(marker, "w").close()
                sys.exit(*code)
            return "after restart"

        def ping(self):
            return "pong"
    for i, code in enumerate([(1,), ("bad state",), ()]):
        a = A.remote()
        assert ray.get(a.exit_once.remote(str(tmp_path / str(i)), *code), timeout=60) == \
            "after restart", code
    a = A.remote()
    with pytest.raises(exceptions.RayActorError):
        ray.get(a.exit_once.remote(str(tmp_path / "zero"), 0), timeout=60)
    with pytest.raises(exceptions.RayActorError):                # no restart
        ray.get(a.ping.remote(), timeout=60)

    @ray.remote(max_restarts=-1, max_task_retries=-1)
    class G:
        @ray.method(num_returns=2)
        def values(self):
            yield 1
            sys.exit(0)                           # from a generator method: the same

        def ping(self):
            return "pong"
    g = G.remote()
    with pytest.raises(exceptions.RayActorError):
        ray.get(g.values.remote(), timeout=60)
    with pytest.raises(exceptions.RayActorError):
        ray.get(g.ping.remote(), timeout=60)


def test_an_actor_dies_with_the_actor_that_created_it_unless_detached(ray):
    # As in Ray: the process that creates an actor owns it, and its end
    # (killed, crashed, exited) ends the actor, though others hold handles.
    @ray.remote
    class Child:
        def ping(self):
            return "pong"

    @ray.remote
    class Parent:
        def make(self):
            self.kids = (Child.remote(), Child.options(lifetime="detached").remote())
            return self.kids

    def dead(handle):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ray.get(handle.ping.remote(), timeout=30)
            except exceptions.RayActorError:
                return True
            time.sleep(0.1)
        return False
    parent = Parent.remote()
    child, detached = ray.get(parent.make.remote(), timeout=60)
    assert ray.get([child.ping.remote(), detached.ping.remote()], timeout=60) == ["pong"] * 2
    ray.kill(parent)
    assert dead(child)
    assert ray.get(detached.ping.remote(), timeout=60) == "pong"
    ray.kill(detached)


def test_named_actors_and_handles_passed_to_tasks(ray):
    @ray.remote
    class Registry:
        def __init__(self):
            self.items = []

        def push(self, x):
            self.items.append(x)
            return len(self.items)

        def all(self):
            return self.items
    r = Registry.options(name="registry-conf").remote()

    @ray.remote
    def use(handle, x):
        return ray.get(handle.push.remote(x))
    ray.get([use.remote(r, i) for i in range(3)], timeout=30)
    same = ray.get_actor("registry-conf")
    assert sorted(ray.get(same.all.remote())) == [0, 1, 2]
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor-conf")
    ray.kill(r)


def test_async_actor_calls_run_concurrently(ray):
    @ray.remote
    class AsyncWorker:
        async def nap(self, s):
            await asyncio.sleep(s)
            return s
    w = AsyncWorker.remote()
    ray.get(w.nap.remote(0), timeout=30)            # started
    t0 = time.monotonic()
    assert ray.get([w.nap.remote(0.5) for _ in range(8)], timeout=30) == [0.5] * 8
    assert time.monotonic() - t0 < 3.5               # not one after another (4 s)


# -- futures -----------------------------------------------------------------------

def test_an_async_init_is_awaited_on_the_actors_event_loop(ray):
    @ray.remote
    class Started:
        async def __init__(self, v):
            await asyncio.sleep(0.01)
            self.v = v
            self.seen = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self.count())   # lives on
            self.n = 0

        async def count(self):
            while True:
                await self.seen.get()
                self.n += 1

        async def read(self):
            await self.seen.put(1)
            for _ in range(200):
                if self.n:
                    break
                await asyncio.sleep(0.01)
            return self.v, self.n

    @ray.remote
    class Fails:
        async def __init__(self):
            raise ValueError("no")

        async def read(self):
            return 1
    @ray.remote
    class Leaves:
        async def __init__(self):
            import nanoray
            nanoray.actor.exit_actor()        # SystemExit: it stopped the loop, and hung

        async def read(self):
            return 1
    a = Started.remote(3)
    assert ray.get(a.read.remote(), timeout=60) == (3, 1)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(Fails.remote().read.remote(), timeout=60)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(Leaves.remote().read.remote(), timeout=60)
    ray.kill(a)


def test_refs_are_awaitable_and_give_futures(ray):
    @ray.remote
    def double(x):
        return 2 * x

    @ray.remote
    def fails():
        raise CustomError("async broke")

    async def main():
        a = await double.remote(4)
        try:
            await fails.remote()
        except CustomError:
            b = "caught"
        return a, b
    assert asyncio.run(main()) == (8, "caught")
    assert double.remote(5).future().result(timeout=30) == 10
    with pytest.raises(CustomError):
        fails.remote().future().result(timeout=30)


def test_runtime_context_inside_and_outside_tasks(ray):
    ctx = ray.get_runtime_context()
    job = ctx.get_job_id()
    assert isinstance(job, str) and job

    @ray.remote
    def ids():
        c = ray.get_runtime_context()
        return c.get_job_id(), c.get_task_id() is not None
    assert ray.get(ids.remote()) == (job, True)


def test_resources_are_reported(ray):
    total = ray.cluster_resources()
    assert total["CPU"] == 2.0
    assert any(k.startswith("node:") for k in total)
    assert 0 <= ray.available_resources().get("CPU", 0) <= 2.0
    assert len(ray.nodes()) == 1 and ray.nodes()[0]["Alive"]
    assert ray.is_initialized()


def test_a_nested_tasks_error_keeps_its_original_type_two_levels_up(ray):
    @ray.remote
    def boom():
        raise KeyError("deep")

    @ray.remote
    def middle():
        return ray.get(boom.remote())

    @ray.remote
    def top():
        return ray.get(middle.remote())
    for f in (middle, top):
        with pytest.raises(KeyError) as info:
            ray.get(f.remote(), timeout=60)
        assert isinstance(info.value, exceptions.RayTaskError)
        assert isinstance(info.value.cause, KeyError)


def test_current_actor_call_methods_and_refs_that_cannot_be_put(ray):
    @ray.remote
    class Me:
        def me(self):
            return ray.get_runtime_context().current_actor

        def ping(self):
            return "pong"

        def __call__(self, x):
            return x + 1
    m = Me.remote()
    h = ray.get(m.me.remote(), timeout=30)
    assert isinstance(h, ray.actor.ActorHandle) and h == m
    assert ray.get(h.ping.remote(), timeout=30) == "pong"
    assert ray.get(m.__call__.remote(1), timeout=30) == 2
    with pytest.raises(TypeError):
        ray.put(ray.put(1))
