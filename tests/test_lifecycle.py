"""Start, stop, crash: nothing left running, nothing lost, no hangs."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import nanoray
from conftest import descendants, wait_gone
from nanoray import exceptions


def _wait_for_workers(n, timeout=10):
    """Workers start asynchronously after init(); waits until n are up."""
    deadline = time.monotonic() + timeout
    while len(nanoray._api._backend.region.worker_pids()) < n:
        assert time.monotonic() < deadline, "fewer than %d workers started" % n
        time.sleep(0.01)


def _runtime_pids():
    b = nanoray._api._backend
    return [b.zygote.pid] + b.region.worker_pids()


def test_shutdown_stops_every_process(fresh):
    ray = fresh(num_cpus=3)

    @ray.remote
    def pid():
        return os.getpid()
    ray.get([pid.remote() for _ in range(10)])
    _wait_for_workers(3)
    pids = _runtime_pids()
    assert len(pids) >= 4 and set(pids) <= set(descendants())
    ray.shutdown()
    assert wait_gone(pids, timeout=5) == []
    assert not ray.is_initialized()
    ray.shutdown()                                    # a second call is a no-op


def test_shutdown_ends_running_tasks(fresh):
    ray = fresh(num_cpus=2)

    @ray.remote
    def forever():
        time.sleep(3600)
    forever.remote()
    time.sleep(0.2)
    pids = _runtime_pids()
    t = time.monotonic()
    ray.shutdown()
    assert wait_gone(pids, timeout=5) == []
    assert time.monotonic() - t < 5


def test_init_twice_and_reinit_after_shutdown(fresh):
    ray = fresh(num_cpus=1)
    with pytest.raises(RuntimeError, match="twice"):
        ray.init(num_cpus=1)
    ray.init(num_cpus=1, ignore_reinit_error=True)
    old = ray.put("old session")
    ray.shutdown()
    ray.init(num_cpus=1)
    with pytest.raises(exceptions.RaySystemError, match="shut down"):
        ray.get(old)
    assert ray.get(ray.put("new")) == "new"


def test_bad_init_arguments(fresh):
    for kwargs in ({"num_cpus": 0}, {"num_cpus": "2"}, {"object_store_memory": 10},
                   {"bogus_option": 1}, {"num_cpus": 2, "_max_workers": 5000},
                   {"num_cpus": 2, "_max_workers": 0}):
        with pytest.raises((ValueError, TypeError)):
            nanoray.init(**kwargs)
    with pytest.raises(ValueError, match="backend"):
        nanoray.init(backend="bogus")
    assert not nanoray.is_initialized()


def test_the_ray_backend_without_ray_says_how_to_get_it(fresh, monkeypatch):
    from nanoray import _ray_backend
    monkeypatch.setitem(sys.modules, "ray", None)          # import ray fails, as uninstalled
    monkeypatch.setattr(_ray_backend, "_ray", None)
    for kwargs in ({"address": "ray://somewhere:10001"}, {"backend": "ray"}):
        with pytest.raises(ImportError, match=r"pip install 'nanoray\[ray\]'"):
            nanoray.init(**kwargs)
        assert not nanoray.is_initialized()
    # "auto" finds no cluster: Ray's ConnectionError, on which programs fall
    # back to a local runtime; it still says how to get the Ray backend.
    with pytest.raises(ConnectionError, match=r"pip install 'nanoray\[ray\]'"):
        nanoray.init(address="auto")
    assert not nanoray.is_initialized()
    monkeypatch.setenv("NANORAY_BACKEND", "ray")
    with pytest.raises(ImportError, match=r"nanoray\[ray\]"):
        nanoray.put(1)                                     # the first call starts it
    assert not nanoray.is_initialized()


def test_first_remote_call_initializes(fresh):
    assert not nanoray.is_initialized()

    @nanoray.remote
    def one():
        return 1
    assert nanoray.get(one.remote()) == 1
    assert nanoray.is_initialized()


def _wait_for_file(path, timeout=10):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    with open(path) as f:
        return int(f.read())


def test_killed_worker_fails_its_task_and_is_replaced(fresh, tmp_path):
    ray = fresh(num_cpus=2)
    marker = str(tmp_path / "pid")

    @ray.remote(max_retries=0)
    def victim(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(3600)
    ref = victim.remote(marker)
    os.kill(_wait_for_file(marker), signal.SIGKILL)
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(ref, timeout=10)

    @ray.remote
    def square(x):
        return x * x
    assert ray.get([square.remote(i) for i in range(20)], timeout=10) == [i * i for i in range(20)]
    deadline = time.monotonic() + 5
    while ray._api._backend.region.stats()["workers"] < 2:
        assert time.monotonic() < deadline, "no replacement worker was started"
        time.sleep(0.01)


def test_killed_worker_task_is_retried(fresh, tmp_path):
    ray = fresh(num_cpus=2)
    marker = str(tmp_path / "pid")

    @ray.remote(max_retries=1)
    def survives(path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(3600)
        return "second attempt"
    ref = survives.remote(marker)
    os.kill(_wait_for_file(marker), signal.SIGKILL)
    assert ray.get(ref, timeout=10) == "second attempt"


def test_killing_a_worker_blocked_in_get_does_not_hang_the_driver(fresh, tmp_path):
    ray = fresh(num_cpus=2)
    marker = str(tmp_path / "pid")

    @ray.remote
    def slow():
        time.sleep(0.5)
        return 1

    @ray.remote(max_retries=0)
    def parent(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        return ray.get(slow.remote())
    ref = parent.remote(marker)
    os.kill(_wait_for_file(marker), signal.SIGKILL)
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(ref, timeout=10)
    assert ray.available_resources()["CPU"] <= 2.0


DRIVER = textwrap.dedent("""
    import os, sys, time
    import nanoray as ray
    ray.init(num_cpus=2)

    @ray.remote
    def pid():
        time.sleep(0.05)
        return os.getpid()
    pids = set(ray.get([pid.remote() for _ in range(8)]))
    b = ray._api._backend
    print(" ".join(map(str, [b.zygote.pid] + b.region.worker_pids())), flush=True)
    if sys.argv[1] == "hang":
        @ray.remote
        def forever():
            time.sleep(3600)
        forever.remote()
        time.sleep(3600)
""")


def _driver(mode, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True)


def test_driver_killed_with_sigkill_takes_its_workers_down(tmp_path):
    proc = _driver("hang", tmp_path)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) >= 3
    proc.kill()
    proc.wait()
    assert wait_gone(pids, timeout=5) == [], "workers outlived a SIGKILLed driver"


def test_driver_exiting_without_shutdown_leaves_nothing(tmp_path):
    proc = _driver("exit", tmp_path)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert proc.wait(timeout=30) == 0
    assert wait_gone(pids, timeout=5) == []


def test_idle_workers_sleep(fresh):
    ray = fresh(num_cpus=2)
    ray.get(ray.remote(lambda: 1).remote())
    pids = ray._api._backend.region.worker_pids()
    time.sleep(0.3)                                    # past every spin phase

    def cpu_ticks(pid):
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])      # utime + stime
    before = [cpu_ticks(p) for p in pids]
    time.sleep(1.0)
    used = [cpu_ticks(p) - b for p, b in zip(pids, before)]
    assert max(used) <= 2, "an idle worker used CPU: %s ticks" % used


def test_a_killed_zygote_fails_waiting_gets_instead_of_hanging(fresh):
    ray = fresh(num_cpus=2)

    @ray.remote
    def forever():
        time.sleep(3600)
    ref = forever.remote()
    time.sleep(0.1)
    pids = _runtime_pids()
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(exceptions.RaySystemError, match="exited unexpectedly"):
        ray.get(ref, timeout=10)
    assert wait_gone(pids, timeout=5) == []          # workers followed their parent


def test_init_starts_num_cpus_workers_without_any_task(fresh):
    import numpy  # noqa: F401  (the zygote preloads what the driver uses)
    fresh(num_cpus=3)
    _wait_for_workers(3)


def test_a_burst_of_tasks_runs_on_num_cpus_workers(fresh):
    # Extra workers are for tasks blocked in get(); a burst queued even before
    # the workers are up must run on exactly num_cpus of them.
    ray = fresh(num_cpus=2)

    @ray.remote
    def whoami(i):
        return os.getpid()
    pids = set()
    for _ in range(3):
        pids |= set(ray.get([whoami.remote(i) for i in range(5000)]))
    assert len(pids) <= 2
    assert ray._api._backend.region.stats()["workers"] <= 2
    _wait_for_workers(2)          # the second may still be starting (numpy preload)
    assert ray._api._backend.region.stats()["workers"] == 2


def test_tasks_blocked_in_get_get_extra_workers(fresh):
    ray = fresh(num_cpus=2)

    @ray.remote
    def leaf():
        return os.getpid()

    @ray.remote
    def parent():
        return ray.get(leaf.remote())
    # Both CPUs' workers block in get(); their children need other workers.
    assert len(ray.get([parent.remote() for _ in range(2)], timeout=30)) == 2
    assert ray._api._backend.region.stats()["workers"] > 2


def test_get_from_a_second_thread_in_a_task_keeps_cpu_accounting(fresh):
    ray = fresh(num_cpus=1)

    @ray.remote(num_cpus=0)
    def slow():
        time.sleep(0.5)
        return 1

    @ray.remote
    def parent(box):
        box[0].future()            # a thread of this worker blocks in get()
        return 0
    s = slow.remote()
    assert ray.get(parent.remote([s])) == 0 and ray.get(s) == 1
    time.sleep(0.2)
    assert ray.available_resources()["CPU"] == 1.0


def test_idle_worker_does_not_spin_while_the_queue_head_needs_more_cpus(fresh):
    ray = fresh(num_cpus=2)

    @ray.remote(num_cpus=1)
    def holds_one():
        time.sleep(1.5)
        return os.getpid()

    @ray.remote(num_cpus=2)
    def needs_two():
        return os.getpid()
    ray.get([needs_two.remote() for _ in range(2)])
    _wait_for_workers(2)
    busy = holds_one.remote()
    time.sleep(0.2)
    waiting = needs_two.remote()              # cannot start until holds_one ends
    time.sleep(0.2)
    pids = ray._api._backend.region.worker_pids()

    def ticks(pid):
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    before = {p: ticks(p) for p in pids}
    time.sleep(0.8)
    used = {p: ticks(p) - before[p] for p in pids}
    runner = ray.get(busy)
    ray.get(waiting)
    assert all(u <= 3 for p, u in used.items() if p != runner), used


def test_a_worker_killed_while_spinning_is_not_counted_as_spinning(fresh, monkeypatch):
    monkeypatch.setenv("NANORAY_WORKER_SPIN_US", "3000000")     # workers spin 3 s when idle
    ray = fresh(num_cpus=2)
    region = ray._api._backend.region

    @ray.remote
    def pid():
        return os.getpid()
    victim = ray.get(pid.remote())                # now spinning for 3 s
    time.sleep(0.1)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:                                   # every live worker asleep
        s = region.stats()
        if s["workers"] >= 2 and s["sleeping"] == s["workers"] and not s["starting"]:
            break
        assert time.monotonic() < deadline, s
        time.sleep(0.05)
    assert region.stats()["spinning"] == 0
    assert ray.get(pid.remote(), timeout=5) != victim


def test_refs_from_a_previous_session_stay_dead_inside_values(fresh):
    ray = fresh(num_cpus=1)
    old = ray.put("session one")
    ray.shutdown()
    ray.init(num_cpus=1)
    ray.put("session two")                         # may reuse old's table slot

    @ray.remote
    def deref(box):
        return ray.get(box[0])
    with pytest.raises(exceptions.RaySystemError, match="shut down"):
        ray.get(deref.remote([old]), timeout=30)
    with pytest.raises(exceptions.RaySystemError, match="shut down"):
        ray.get(ray.get(ray.put([old]))[0])


def test_nesting_past_the_worker_limit_is_an_error_not_a_hang(fresh):
    ray = fresh(num_cpus=1, _max_workers=3)

    @ray.remote
    def depth(n):
        return 0 if n == 0 else 1 + ray.get(depth.remote(n - 1))
    assert ray.get(depth.remote(2), timeout=30) == 2          # fits: 3 workers
    with pytest.raises(exceptions.RaySystemError, match="worker limit"):
        ray.get(depth.remote(6), timeout=30)
    # The failed chain's deeper tasks were already queued: they run on (and
    # fail the same way) until none is left, then the runtime is usable.
    deadline = time.monotonic() + 30
    while ray._api._backend.region.stats()["tasks"]:
        assert time.monotonic() < deadline, "orphaned tasks never drained"
        time.sleep(0.05)
    assert ray.get(depth.remote(1), timeout=30) == 1


class _SlowToPickle:
    def __reduce__(self):
        time.sleep(0.5)                   # keeps the first export in progress
        return (_SlowToPickle, ())


_SLOW = _SlowToPickle()


def test_a_function_being_exported_is_never_submitted_half_written(fresh):
    import threading
    ray = fresh(num_cpus=1)

    @ray.remote
    def f(x):
        _SLOW                             # captured global: pickled with f
        return x + 1
    out = {}

    def first():
        out["a"] = ray.get(f.remote(1), timeout=30)
    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.2)                       # the first call is inside the export
    out["b"] = ray.get(f.remote(2), timeout=30)
    t.join(30)
    out["c"] = ray.get(f.remote(3), timeout=30)
    assert out == {"a": 2, "b": 3, "c": 4}


def test_a_task_waiting_through_a_future_or_await_lends_its_cpu(fresh):
    import asyncio
    ray = fresh(num_cpus=1)

    @ray.remote
    def child():
        return 41

    @ray.remote
    def via_future():
        return child.remote().future().result(timeout=20) + 1

    @ray.remote
    def via_await():
        async def main():
            return await child.remote()
        return asyncio.run(asyncio.wait_for(main(), 20)) + 1
    assert ray.get(via_future.remote(), timeout=30) == 42
    assert ray.get(via_await.remote(), timeout=30) == 42


def test_a_timed_wait_at_the_worker_limit_times_out_normally(fresh):
    ray = fresh(num_cpus=1, _max_workers=1)

    @ray.remote
    def child():
        return 1

    @ray.remote
    def bounded_get():
        try:
            return ray.get(child.remote(), timeout=1.5)
        except exceptions.GetTimeoutError:
            return "timed out"

    @ray.remote
    def bounded_wait():
        ready, _ = ray.wait([child.remote()], timeout=1.5)
        return len(ready)
    # The child can never run (one worker, busy), yet these are not deadlocks:
    # each wait ends by its timeout, as the task asked.
    assert ray.get(bounded_get.remote(), timeout=30) in ("timed out", 1)
    assert ray.get(bounded_wait.remote(), timeout=30) in (0, 1)


def test_worker_limits():
    from nanoray._api import EXTRA_WORKERS, MAX_PROCS, worker_limits
    assert worker_limits(2) == (2, 2 + EXTRA_WORKERS)
    assert worker_limits(0.5) == (1, 1 + EXTRA_WORKERS)
    assert worker_limits(900) == (900, MAX_PROCS - 2)      # the default is capped
    assert worker_limits(2, 3) == (2, 3)
    with pytest.raises(ValueError):
        worker_limits(2, 5000)                             # an explicit ask is not
    with pytest.raises(ValueError):
        worker_limits(5000)
