"""Ray Core semantics, written once against the public API only (``ray`` is
the nanoray module here): cancel, exception retries,
runtime_env, DAGs, nanoray.cloudpickle, and the odd corners (a parameter
named self).  Resources and placement groups: test_conformance_resources.py.  Nothing below reaches into nanoray's internals, so the same
module can run against another backend of the same API."""

import asyncio
import os
import sys
import textwrap
import time

import pytest

from conftest import (conformance_fixtures, infeasible_warning, on_ray, ray_cancel_race, touch,
                      touches, wait_for_path)
from nanoray import exceptions


# Each test runs on the local backend, then on Ray when it is installed.
ray, fresh = conformance_fixtures()


def test_cancel_a_queued_task_it_never_runs(ray, tmp_path):
    ran = str(tmp_path / "ran")

    @ray.remote
    def hold(seconds):
        time.sleep(seconds)

    @ray.remote
    def mark(path):
        touch(path)
    blockers = [hold.remote(1.0) for _ in range(2)]    # both CPUs busy
    queued = mark.remote(ran)
    ray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=30)
    ray.get(blockers, timeout=30)
    time.sleep(0.2)
    assert not os.path.exists(ran)


def test_cancel_a_running_task_interrupts_it(ray, tmp_path):
    ray_cancel_race()
    started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")

    @ray.remote
    def spin(started, interrupted):
        touch(started)
        try:
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            touch(interrupted)
            raise
    ref = spin.remote(started, interrupted)
    wait_for_path(started)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert os.path.exists(interrupted)
    assert ray.get(ray.remote(lambda: "alive").remote(), timeout=30) == "alive"


def test_force_cancel_kills_the_worker_and_is_not_retried(ray, tmp_path):
    ray_cancel_race()
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=5)
    def stubborn(path):
        touch(path)
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # ignores a plain cancel
        time.sleep(60)
        return os.getpid()
    ref = stubborn.remote(attempts)
    deadline = time.monotonic() + 30
    while touches(attempts) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    ray.cancel(ref, force=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert time.monotonic() - t0 < 20
    time.sleep(0.5)
    assert touches(attempts) == 1                          # not retried
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=30) == 7


def test_recursive_cancel_reaches_the_tasks_a_task_submitted(ray, tmp_path):
    ray_cancel_race()
    child_started = str(tmp_path / "child")

    @ray.remote
    def child(path):
        touch(path)
        while True:
            time.sleep(0.01)

    @ray.remote
    def parent(path):
        return ray.get(child.remote(path))
    ref = parent.remote(child_started)
    wait_for_path(child_started)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    # The child was cancelled too: both CPUs are free for new work.
    assert ray.get([ray.remote(lambda i: i).remote(i) for i in range(4)], timeout=30) == \
        [0, 1, 2, 3]


def test_cancelling_a_finished_task_or_a_put_does_nothing(ray):
    @ray.remote
    def one():
        return 1
    ref = one.remote()
    assert ray.get(ref) == 1
    ray.cancel(ref)
    assert ray.get(ref) == 1
    p = ray.put("kept")
    ray.cancel(p)
    assert ray.get(p) == "kept"
    with pytest.raises(TypeError):
        ray.cancel("not a ref")


def test_cancelling_a_task_that_has_returned_leaves_what_it_submitted_running(ray):
    ray_cancel_race()       # seen to abort Ray 2.60's driver here (the reply races the cancel)
    # Its result is in, so the cancel is a no-op, recursive or not: the
    # children it handed back keep running (asked at once, while its worker
    # may still be finishing it, which cancelled them here before).
    @ray.remote
    def child(i):
        time.sleep(0.05)
        return i

    @ray.remote
    def parent(i):
        return [child.remote(i)]
    for i in range(10):
        p = parent.remote(i)
        [c] = ray.get(p, timeout=30)
        ray.cancel(p, recursive=True)
        assert ray.get(c, timeout=30) == i


def test_cancel_actor_calls_queued_never_run_and_running_see_is_canceled(ray, tmp_path):
    flag = str(tmp_path / "flag")

    @ray.remote
    class Worker:
        def __init__(self):
            self.ran = []

        def poll_until_cancelled(self, flag, seconds=30):
            touch(flag)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if ray.get_runtime_context().is_canceled():
                    return "saw cancel"
                time.sleep(0.01)
            return "timed out"

        def record(self, x):
            self.ran.append(x)

        def history(self):
            return self.ran
    w = Worker.remote()
    running = w.poll_until_cancelled.remote(flag)
    queued = w.record.remote("queued")
    wait_for_path(flag)
    ray.cancel(queued)
    ray.cancel(running)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=30)
    # A running call of a sync actor is not interrupted (its state would be
    # left half-changed), and its result is TaskCancelledError all the same.
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running, timeout=30)
    # On Ray a cancelled call already queued in the actor may still run
    # (its ref raises TaskCancelledError either way); here it never does.
    assert ray.get(w.history.remote(), timeout=30) in ([[], ["queued"]] if on_ray() else [[]])
    # Ray 2.60 sometimes runs a call cancelled this early without setting
    # is_canceled for it: it then polls to its deadline, and its ref raises
    # TaskCancelledError.  The deadline stays well inside get's timeout.
    again = w.poll_until_cancelled.remote(flag, 10)
    with pytest.raises(ValueError, match="force"):
        ray.cancel(again, force=True)                     # actor calls cannot be killed alone
    ray.cancel(again)
    try:
        result = ray.get(again, timeout=30)
    except exceptions.TaskCancelledError:
        result = "cancelled before it ran"
    assert result in ("saw cancel", "cancelled before it ran")


def test_a_cancelled_running_actor_call_whose_actor_dies_raises_task_cancelled(ray, tmp_path):
    started = str(tmp_path / "started")

    @ray.remote(max_restarts=1, max_concurrency=2)
    class Worker:
        def pid(self):
            return os.getpid()

        def slow(self, started):
            touch(started)
            time.sleep(30)
            return "done"
    w = Worker.remote()
    pid = ray.get(w.pid.remote(), timeout=60)
    ref = w.slow.remote(started)
    wait_for_path(started)
    ray.cancel(ref)
    time.sleep(0.2)
    import signal
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(exceptions.TaskCancelledError):   # the cancel's, not the death's
        ray.get(ref, timeout=60)
    assert ray.get(w.pid.remote(), timeout=60) != pid     # restarted


def test_a_cancelled_generator_actor_method_delivers_nothing_made_after_the_cancel(ray, tmp_path):
    @ray.remote
    class Source:
        def pair(self, started, gate):
            touch(started)
            wait_for_path(gate)
            yield 1
            yield 2

        def some(self, started, gate):
            touch(started)
            wait_for_path(gate)
            yield from range(3)
    s = Source.remote()
    for kind in ("pair", "dynamic"):
        started, gate = str(tmp_path / (kind + "-started")), str(tmp_path / (kind + "-gate"))
        if kind == "pair":
            refs = s.pair.options(num_returns=2).remote(started, gate)
        else:
            refs = [s.some.options(num_returns="dynamic").remote(started, gate)]
        wait_for_path(started)
        ray.cancel(refs[0])
        time.sleep(0.2)
        touch(gate)
        for ref in refs:
            with pytest.raises(exceptions.TaskCancelledError):
                ray.get(ref, timeout=30)


def test_cancel_a_running_async_actor_call_cancels_its_coroutine(ray):
    @ray.remote
    class Service:
        def __init__(self):
            self.saw = []

        async def long(self):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.saw.append("cancelled")
                raise
            return "finished"

        async def quick(self):
            return "quick"

        async def seen(self):
            return self.saw
    s = Service.remote()
    ref = s.long.remote()
    assert ray.get(s.quick.remote(), timeout=30) == "quick"   # long is running
    t0 = time.monotonic()
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert time.monotonic() - t0 < 5
    assert ray.get(s.seen.remote(), timeout=30) == ["cancelled"]


def test_an_async_call_that_swallows_its_cancel_still_raises_task_cancelled(ray):
    @ray.remote
    class Service:
        async def swallow(self):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                return "swallowed"

        async def quick(self):
            return "quick"
    s = Service.remote()
    ref = s.swallow.remote()
    assert ray.get(s.quick.remote(), timeout=30) == "quick"   # swallow is running
    time.sleep(0.2)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert ray.get(s.quick.remote(), timeout=30) == "quick"


def test_cancelling_an_async_call_just_as_it_starts_never_loses_it(ray):
    @ray.remote(max_concurrency=2)
    class Busy:
        async def block(self):
            time.sleep(0.3)                                   # holds the event loop
            await asyncio.sleep(0.2)
            return "blocked"

        async def work(self):
            return "worked"

        async def pair(self, event_name):
            ev = self.__dict__.setdefault(event_name, asyncio.Event())
            if ev.is_set():
                return "second"
            ev.set()
            await asyncio.sleep(0.05)
            return "first"
    for attempt in range(5):
        b = Busy.remote()
        ra = b.block.remote()
        time.sleep(0.1)
        rb = b.work.remote()
        time.sleep(0.02 + attempt * 0.01)
        ray.cancel(rb)
        try:
            assert ray.get(rb, timeout=10) == "worked"
        except exceptions.TaskCancelledError:
            pass
        assert ray.get(ra, timeout=10) == "blocked"
        # Both concurrency slots are still there: two calls run together.
        assert sorted(ray.get([b.pair.remote("e"), b.pair.remote("e")], timeout=10)) == \
            ["first", "second"]


# -- exception retries ----------------------------------------------------------


def test_retry_exceptions_true_retries_until_success(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky(path):
        touch(path)
        if touches(path) < 3:
            raise ConnectionError("try again")
        return touches(path)
    assert ray.get(flaky.remote(attempts), timeout=30) == 3


def test_retry_exceptions_gives_up_after_max_retries(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=2, retry_exceptions=True)
    def always(path):
        touch(path)
        raise ConnectionError("still down")
    with pytest.raises(ConnectionError, match="still down"):
        ray.get(always.remote(attempts), timeout=30)
    assert touches(attempts) == 3                          # 1 run + 2 retries


def test_retry_exceptions_list_retries_only_those_types(ray, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")

    @ray.remote(max_retries=4, retry_exceptions=[ConnectionError])
    def raises(path, exc):
        touch(path)
        raise exc("x")
    with pytest.raises(ValueError):
        ray.get(raises.remote(a, ValueError), timeout=30)
    assert touches(a) == 1
    with pytest.raises(ConnectionError):
        ray.get(raises.remote(b, ConnectionError), timeout=30)
    assert touches(b) == 5
    # Without retry_exceptions an application error is never retried.
    c = str(tmp_path / "c")
    with pytest.raises(ConnectionError):
        ray.get(raises.options(retry_exceptions=False).remote(c, ConnectionError), timeout=30)
    assert touches(c) == 1
    with pytest.raises(TypeError):
        raises.options(retry_exceptions=["not an exception type"])


def test_actor_methods_retry_exceptions_with_max_task_retries(ray):
    @ray.remote(max_task_retries=2)
    class Flaky:
        def __init__(self):
            self.calls = 0

        @ray.method(retry_exceptions=True)
        def work(self):
            self.calls += 1
            if self.calls < 3:
                raise TimeoutError("again")
            return self.calls

        def plain(self):
            self.calls += 1
            raise TimeoutError("not retried")
    f = Flaky.remote()
    assert ray.get(f.work.remote(), timeout=30) == 3
    with pytest.raises(TimeoutError):
        ray.get(f.plain.remote(), timeout=30)
    assert ray.get(f.work.options(retry_exceptions=False).remote(), timeout=30) == 5


# -- runtime_env --------------------------------------------------------------


def test_task_env_vars_apply_to_that_task_only(ray):
    @ray.remote
    def read(name):
        return os.environ.get(name)
    assert ray.get(read.options(runtime_env={"env_vars": {"NR_CONF_A": "on"}})
                   .remote("NR_CONF_A"), timeout=30) == "on"
    assert ray.get([read.remote("NR_CONF_A") for _ in range(4)], timeout=30) == [None] * 4


def test_nested_tasks_inherit_the_runtime_env(ray):
    @ray.remote
    def read(name):
        return os.environ.get(name)

    @ray.remote(runtime_env={"env_vars": {"NR_CONF_OUTER": "1", "NR_CONF_BOTH": "outer"}})
    def outer():
        inner = read.options(runtime_env={"env_vars": {"NR_CONF_BOTH": "inner"}})
        return ray.get([read.remote("NR_CONF_OUTER"), inner.remote("NR_CONF_BOTH")])
    assert ray.get(outer.remote(), timeout=30) == ["1", "inner"]


def test_actor_runtime_env_holds_for_its_life_and_working_dir_imports(ray, tmp_path):
    (tmp_path / "nr_conf_helper.py").write_text("VALUE = 'from working_dir'\n")

    @ray.remote
    class Env:
        def read(self, name):
            return os.environ.get(name)

        def helper(self):
            import nr_conf_helper
            return nr_conf_helper.VALUE, os.getcwd()
    if on_ray():
        # Ray uploads a local working_dir only at the job level (init).
        with pytest.raises(ValueError, match="only supported at the job level"):
            Env.options(runtime_env={"working_dir": str(tmp_path)}).remote()
        return
    e = Env.options(runtime_env={"env_vars": {"NR_CONF_ACTOR": "yes"},
                                 "working_dir": str(tmp_path)}).remote()
    assert ray.get([e.read.remote("NR_CONF_ACTOR") for _ in range(2)], timeout=30) == ["yes"] * 2
    assert ray.get(e.helper.remote(), timeout=30) == ("from working_dir", str(tmp_path))


def test_unsupported_runtime_env_keys_are_named(ray):
    @ray.remote
    def f():
        return 1
    with pytest.raises(ValueError, match="'pip'"):
        f.options(runtime_env={"pip": ["requests"]})
    with pytest.raises(ValueError, match="'conda'"):
        ray.remote(runtime_env={"conda": "env"})(f)
    with pytest.raises(exceptions.RuntimeEnvSetupError, match="does not exist"):
        f.options(runtime_env={"working_dir": "/nonexistent/nanoray/dir"})
    with pytest.raises(ValueError, match="remote URIs"):
        f.options(runtime_env={"working_dir": "s3://bucket/pkg.zip"})


def test_init_runtime_env_reaches_every_worker(fresh, tmp_path):
    (tmp_path / "nr_conf_mod").mkdir()
    (tmp_path / "nr_conf_mod" / "__init__.py").write_text("NAME = 'py_module'\n")
    ray = fresh(num_cpus=2, runtime_env={"env_vars": {"NR_CONF_JOB": "job"},
                                         "py_modules": [str(tmp_path / "nr_conf_mod")]})

    @ray.remote
    def read():
        import nr_conf_mod
        return os.environ.get("NR_CONF_JOB"), nr_conf_mod.NAME
    assert ray.get([read.remote() for _ in range(4)], timeout=30) == [("job", "py_module")] * 4
    assert os.environ.get("NR_CONF_JOB") is None            # not the driver's


# -- DAGs ---------------------------------------------------------------------


def test_dag_of_functions_and_actors_with_input_node(ray):
    from nanoray.dag import InputNode, MultiOutputNode

    @ray.remote
    class Model:
        def __init__(self, weight):
            self.weight = weight

        def forward(self, x):
            return self.weight * x

    @ray.remote
    def combine(a, b):
        return a + b

    with InputNode() as inp:
        m1, m2 = Model.bind(1), Model.bind(2)
        dag = combine.bind(m1.forward.bind(inp[0]), m2.forward.bind(inp.x))
    assert ray.get(dag.execute(1, x=2), timeout=30) == 5
    assert ray.get(dag.execute(10, x=20), timeout=30) == 50

    with InputNode() as inp:
        shared = combine.bind(inp, 1)
        multi = MultiOutputNode([combine.bind(shared, 10), combine.bind(shared, 100)])
    assert ray.get(multi.execute(0), timeout=30) == [11, 101]
    assert ray.get(combine.options(num_cpus=1).bind(2, 3).execute(), timeout=30) == 5


def test_dag_runs_each_shared_node_once_and_binds_live_actors(ray):
    from nanoray.dag import InputNode

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    @ray.remote
    def pair(a, b):
        return (a, b)
    c = Counter.remote()
    with InputNode() as inp:
        once = c.add.bind(inp)
        dag = pair.bind(once, once)
    assert ray.get(dag.execute(5), timeout=30) == (5, 5)     # add ran once
    assert ray.get(dag.execute(1), timeout=30) == (6, 6)     # the live actor kept its state


def test_dag_calls_bound_on_one_class_node_run_in_the_order_bound(ray):
    # Ray's documented example: each method node runs the calls bound on
    # its actor before it.
    @ray.remote
    class Actor:
        def __init__(self, value):
            self.i = value

        def inc(self, x):
            self.i += x

        def get(self):
            return self.i

    @ray.remote
    def combine(x, y):
        return x + y
    a1 = Actor.bind(10)
    assert ray.get(a1.get.bind().execute(), timeout=30) == 10
    a2 = Actor.bind(10)
    a1.inc.bind(2)
    a1.inc.bind(4)
    a2.inc.bind(6)
    dag = combine.bind(a1.get.bind(), a2.get.bind())
    assert ray.get(dag.execute(), timeout=30) == 32


def test_dag_node_errors_propagate(ray):
    from nanoray.dag import InputNode

    @ray.remote
    def boom(x):
        raise ZeroDivisionError(x)

    @ray.remote
    def after(x):
        return x
    with InputNode() as inp:
        dag = after.bind(boom.bind(inp))
    with pytest.raises(ZeroDivisionError):
        ray.get(dag.execute(1), timeout=30)


# -- the rest -----------------------------------------------------------------


def test_a_parameter_named_self(ray):
    @ray.remote
    def f(self, other=0):
        return self + other
    assert ray.get(f.remote(self=1, other=2)) == 3
    assert ray.get(f.options(num_cpus=1).remote(self=4)) == 4


def test_cloudpickle_is_exported_and_an_out_of_band_ref_keeps_its_object(ray):
    import gc
    data = ray.cloudpickle.dumps(ray.put("kept alive"))     # the only ref is dropped
    gc.collect()
    for _ in range(20):                                     # churn the store
        ray.get(ray.put(bytes(1000)))
    ref = ray.cloudpickle.loads(data)
    assert ray.get(ref, timeout=30) == "kept alive"

    @ray.remote
    def unpickle_in_task(blob):
        return ray.get(ray.cloudpickle.loads(blob))
    assert ray.get(unpickle_in_task.remote(data), timeout=30) == "kept alive"


def test_a_script_written_for_ray_generators_runs_unchanged(tmp_path):
    script = tmp_path / "stream.py"
    script.write_text(textwrap.dedent("""
        import nanoray as ray
        ray.init(num_cpus=2)

        @ray.remote
        def task():
            for i in range(5):
                yield i

        gen = task.remote()
        print(sum(ray.get(ref) for ref in gen))
        ray.shutdown()
    """))
    import subprocess
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "10"


# -- found in review ------------------------------------------------------------


def test_a_cancel_arriving_while_arguments_load_still_cancels(ray):
    ray_cancel_race()
    class SlowToLoad:
        def __reduce__(self):
            return (_slow_rebuild, ())

    @ray.remote
    def run(arg):
        time.sleep(1.5)
        return "ran to completion"
    ref = run.remote(SlowToLoad())
    time.sleep(0.4)                                     # inside the unpickling
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)


def _slow_rebuild():
    time.sleep(1.0)
    return "loaded"


def test_each_retry_gets_fresh_arguments(ray):
    @ray.remote(max_retries=3, retry_exceptions=True)
    def mutate(items):
        items.append(1)
        if len(items) < 3:
            raise RuntimeError("attempt saw %d" % len(items))
        return items
    with pytest.raises(RuntimeError, match="attempt saw 1"):
        ray.get(mutate.remote([]), timeout=30)


def test_recursive_force_cancel_passes_over_actor_calls(ray, tmp_path):
    ray_cancel_race()
    started = str(tmp_path / "started")

    @ray.remote
    class Slow:
        def wait(self, s):
            time.sleep(s)
            return "done"

    @ray.remote
    def leaf(path):
        touch(path)
        time.sleep(60)

    @ray.remote
    def parent(a, path):
        x = a.wait.remote(1.0)
        y = leaf.remote(path)
        return ray.get([x, y])
    a = Slow.remote()
    ref = parent.remote(a, started)
    wait_for_path(started)
    ray.cancel(ref, force=True)                         # no ValueError: the call is a child
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    # The leaf was force-cancelled too: both CPUs take new work.
    assert ray.get([ray.remote(lambda i: i).remote(i) for i in range(4)], timeout=30) == \
        [0, 1, 2, 3]


def test_copies_of_a_ref_do_not_pin_its_object(ray):
    import copy
    import gc
    before = ray.available_resources()["object_store_memory"]
    ref = ray.put(bytes(8 << 20))
    copies = [copy.copy(ref), copy.deepcopy({"r": ref})["r"]]
    assert all(c == ref for c in copies)
    del ref, copies
    gc.collect()
    deadline = time.monotonic() + 10
    while ray.available_resources()["object_store_memory"] < before - (1 << 20):
        assert time.monotonic() < deadline, "the copied ref's object was never freed"
        time.sleep(0.05)


def test_a_failed_runtime_env_leaves_nothing_behind(ray, tmp_path):
    @ray.remote
    def read():
        return os.environ.get("NR_CONF_LEAK")
    gone = tmp_path / "gone"
    gone.mkdir()
    f = read.options(runtime_env={"env_vars": {"NR_CONF_LEAK": "leak"},
                                  "working_dir": str(gone)})
    gone.rmdir()                                        # valid when bound, gone when run
    if on_ray():
        # Ray checks a working_dir path at .remote(), not when the task runs.
        with pytest.raises(ValueError, match="not a valid path"):
            f.remote()
        return
    with pytest.raises(exceptions.RuntimeEnvSetupError):
        ray.get(f.remote(), timeout=30)
    assert ray.get([read.remote() for _ in range(4)], timeout=30) == [None] * 4


def test_a_cancelled_task_still_waiting_for_its_arguments_is_released(fresh):
    ray = fresh(num_cpus=2, num_gpus=1)

    @ray.remote
    def slow():
        time.sleep(0.5)
        return bytes(1 << 20)

    @ray.remote(num_gpus=2)
    def never(x):
        return len(x)
    with infeasible_warning():
        refs = [never.remote(slow.remote()) for _ in range(4)]
    for r in refs:
        ray.cancel(r, recursive=False)
    for r in refs:
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(r, timeout=30)
    time.sleep(1.0)                                         # the arguments arrive
    import gc
    gc.collect()
    deadline = time.monotonic() + 10
    while not on_ray() and ray._api._backend.region.stats()["tasks"]:
        assert time.monotonic() < deadline, "cancelled tasks stayed queued"
        time.sleep(0.05)


def test_a_get_of_many_raises_the_first_failure_in_list_order_at_once(ray, tmp_path):
    gate = str(tmp_path / "gate")

    @ray.remote
    def fails(i):
        raise ValueError("fail%d" % i)

    @ray.remote
    def gated(path):
        wait_for_path(path, 60)
        return 1
    a, b = fails.remote(1), fails.remote(2)
    ray.wait([a, b], num_returns=2, timeout=30)
    for refs, first in (([a, b], "fail1"), ([b, a], "fail2")):
        with pytest.raises(ValueError, match=first):
            ray.get(refs, timeout=30)
    slow = [gated.remote(gate) for _ in range(3)]
    # Failed before the get, behind pending refs: raised at once (a wait for
    # the gated ones would end in GetTimeoutError).
    for refs, first in (([a, slow[0], b], "fail1"), ([slow[0], b, slow[1]], "fail2"),
                        ([slow[0], slow[1], a], "fail1")):
        with pytest.raises(ValueError, match=first):
            ray.get(refs, timeout=20)
    touch(gate)
    assert ray.get(slow, timeout=60) == [1, 1, 1]
