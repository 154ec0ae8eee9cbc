"""Waiting costs no CPU that running work needs: a waiter spins only while a
CPU is free, and a seal wakes only the threads waiting on that object."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import nanoray

NCPU = len(os.sched_getaffinity(0))

# A driver with a long get() spin (0.4 s, cut to the first 0.1 s wait slice),
# timing the CPU its get() burns while `busy` tasks keep CPUs busy with pure
# Python work: about 0.1 s when it spins, about 1 ms (two system calls and a
# wake-up) when it sleeps at once.
SPIN_PROBE = textwrap.dedent("""
    import os, sys, time
    import nanoray
    busy = int(sys.argv[1])
    nanoray.init(num_cpus=max(busy, 1))

    @nanoray.remote
    def burn(seconds):
        end = time.thread_time() + seconds    # CPU time: preempted work takes longer
        while time.thread_time() < end:
            pass
        return seconds

    refs = [burn.remote(0.6) for _ in range(busy)]
    deadline = time.monotonic() + 10
    # every task started (the pool may still be growing)
    while nanoray._api._backend.region.stats()["busy"] < busy and time.monotonic() < deadline:
        time.sleep(0.005)
    c = time.process_time()
    nanoray.get(refs[0])
    print(time.process_time() - c)
    nanoray.get(refs)
    nanoray.shutdown()
""")


def _driver_cpu_in_get(busy):
    env = dict(os.environ, NANORAY_GET_SPIN_US="400000")
    out = subprocess.run([sys.executable, "-c", SPIN_PROBE, str(busy)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


def test_a_get_does_not_spin_while_every_cpu_runs_a_task():
    # Every CPU runs a task: the 0.4 s spin would take a CPU from one of
    # them, so the driver sleeps at once.
    assert _driver_cpu_in_get(NCPU) < 0.015


def test_a_get_spins_while_a_cpu_is_free():
    # The control: the same probe with a CPU free does spin (so the test
    # above measures the gate, not a spin that never happens).
    if NCPU < 2:
        busy_cpu = _driver_cpu_in_get(1)       # one CPU: it runs the task, so no spin
        assert busy_cpu < 0.015
        return
    assert _driver_cpu_in_get(NCPU - 1) > 0.025


def test_stats_count_the_processes_running_tasks(ray):
    @ray.remote
    def hold(seconds):
        time.sleep(seconds)
        return 1

    s = nanoray._api._backend.region.stats()
    assert s["ncpu"] == NCPU
    base = s["busy"]
    refs = [hold.remote(0.5) for _ in range(2)]
    deadline = time.monotonic() + 5
    while nanoray._api._backend.region.stats()["busy"] < base + 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert nanoray._api._backend.region.stats()["busy"] == base + 2
    assert ray.get(refs) == [1, 1]
    deadline = time.monotonic() + 5
    while nanoray._api._backend.region.stats()["busy"] != base and time.monotonic() < deadline:
        time.sleep(0.005)
    assert nanoray._api._backend.region.stats()["busy"] == base


def _voluntary_switches(tid):
    with open("/proc/self/task/%d/status" % tid) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches for thread %d" % tid)


def _quick_and_a_slow_one(ray):
    """A quick task (warmed up), and the ref of a 1.5 s one started now."""
    @ray.remote
    def slow():
        time.sleep(1.5)
        return "slow"

    @ray.remote
    def quick(i):
        return i

    ray.get([quick.remote(i) for i in range(4)])
    return quick, slow.remote()


def test_a_seal_wakes_only_the_waiters_of_that_object(ray):
    # One thread waits in get() on a slow task; meanwhile the main thread
    # waits on 300 quick tasks in turn.  Each of those seals must not wake
    # the first thread (through one shared futex word it would wake 300
    # times); it wakes only for its own wait slices (every 0.1 s).
    quick, slow_ref = _quick_and_a_slow_one(ray)
    tid, got = [], []
    started = threading.Event()

    def waiter():
        tid.append(threading.get_native_id())
        started.set()
        got.append(ray.get(slow_ref))

    t = threading.Thread(target=waiter)
    t.start()
    started.wait()
    time.sleep(0.05)                           # it sleeps in get() now
    before = _voluntary_switches(tid[0])
    for i in range(300):
        assert ray.get(quick.remote(i)) == i
    woken = _voluntary_switches(tid[0]) - before
    assert t.is_alive(), "the slow task finished early: the test measured nothing"
    t.join()
    assert got == ["slow"]
    assert woken < 40, "a waiter on one object was woken %d times by other seals" % woken


def test_a_seal_wakes_no_thread_in_wait_on_other_objects(ray):
    # As above, with wait(): threads waiting on several objects sleep on one
    # futex word per group of threads (a thread's native id modulo 16), and
    # a seal wakes only the groups watching that object.  (Through one word
    # shared by all, 20 idle waiters took 2 s of CPU.)
    quick, slow_ref = _quick_and_a_slow_one(ray)
    mine = threading.get_native_id() % 16
    tid, got = [], []
    started = threading.Event()

    def waiter():
        tid.append(threading.get_native_id())
        started.set()
        if tid[-1] % 16 != mine:                # in another group than the main thread
            got.append(ray.wait([slow_ref], timeout=30)[0])

    for _ in range(20):
        t = threading.Thread(target=waiter)
        t.start()
        started.wait()
        started.clear()
        if tid[-1] % 16 != mine:
            break
        t.join()
    time.sleep(0.05)                           # it sleeps in wait() now
    before = _voluntary_switches(tid[-1])
    for i in range(300):
        ready, _ = ray.wait([quick.remote(i)], timeout=30)
        assert len(ready) == 1
    woken = _voluntary_switches(tid[-1]) - before
    assert t.is_alive(), "the slow task finished early: the test measured nothing"
    t.join()
    assert got == [[slow_ref]]
    assert woken < 40, "a thread in wait() was woken %d times by other seals" % woken


def test_a_get_of_many_raises_an_error_behind_a_slower_ref_at_once(ray, tmp_path):
    # The failure is the second ref: get raises it without waiting for the
    # first, which finishes only once the gate opens, after the get.
    from conftest import touch, wait_for_path
    gate = str(tmp_path / "gate")

    @ray.remote
    def gated(path):
        wait_for_path(path, 60)
        return 1

    @ray.remote
    def fails():
        time.sleep(0.05)
        raise KeyError("behind")
    refs = [gated.remote(gate), fails.remote(), gated.remote(gate)]
    try:
        ray.get(refs, timeout=30)                # GetTimeoutError if it waited for refs[0]
        raise AssertionError("get returned")
    except KeyError:
        pass
    touch(gate)
    assert ray.get([refs[0], refs[2]], timeout=60) == [1, 1]


def test_an_actor_dying_in_init_after_its_last_handle_went_leaves_no_busy_count(ray):
    # Its slot is freed while it was running its creation task: the busy
    # count must drop with it (else waiters stop spinning for good, and the
    # next repair's verification fails).
    region = nanoray._api._backend.region
    deadline = time.monotonic() + 5            # the last test's task is sealed before
    while region.stats()["busy"] and time.monotonic() < deadline:   # its worker is idle
        time.sleep(0.01)
    base = region.stats()["busy"]
    assert base == 0

    @ray.remote
    class DiesInInit:
        def __init__(self):
            time.sleep(0.5)
            os._exit(1)

    h = DiesInInit.remote()
    deadline = time.monotonic() + 5
    while region.stats()["busy"] == base and time.monotonic() < deadline:
        time.sleep(0.01)
    assert region.stats()["busy"] == base + 1          # running its __init__
    del h                                                # orphaned while running
    deadline = time.monotonic() + 10
    while region.stats()["busy"] != base and time.monotonic() < deadline:
        time.sleep(0.02)
    assert region.stats()["busy"] == base
    assert region.verify()["code"] == 0


def _thread_sleeps():
    import resource
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def test_a_get_of_many_results_is_not_woken_by_each_one(ray):
    # 3000 short tasks sealed about every 0.1 ms: a get that slept on each
    # result in turn was woken about once per task (2,564 times); it sleeps
    # on the last one instead, looking at the others every millisecond.
    @ray.remote
    def short(i):
        time.sleep(0.0002)
        return i
    ray.get([short.remote(i) for i in range(100)])
    n = 3000
    refs = [short.remote(i) for i in range(n)]
    before, t0 = _thread_sleeps(), time.monotonic()
    assert ray.get(refs, timeout=120) == list(range(n))
    woken, ms = _thread_sleeps() - before, (time.monotonic() - t0) * 1000
    assert woken < min(n / 2, 1.5 * ms + 100), (woken, ms)


def test_a_get_of_many_results_still_raises_the_first_error_at_once(ray):
    @ray.remote
    def fails():
        raise KeyError("early")

    @ray.remote
    def slow():
        time.sleep(20)
    bad, late = fails.remote(), slow.remote()
    t0 = time.monotonic()
    try:
        ray.get([bad, late], timeout=60)
        raise AssertionError("get returned")
    except KeyError:
        pass
    assert time.monotonic() - t0 < 5
    ray.cancel(late, force=True)


def test_awaited_refs_leave_the_store_once_dropped(ray):
    # The thread that wakes awaits and futures kept the last refs it had
    # handed over until its next wake-up.
    import asyncio
    import numpy as np
    from conftest import store_objects

    @ray.remote
    def slow(i):
        time.sleep(0.02)
        return np.full(10, i)

    async def main(n):
        return [int((await r)[0]) for r in [slow.remote(i) for i in range(n)]]
    assert int(ray.get(slow.remote(0), timeout=30)[0]) == 0    # exported, no await yet
    before = store_objects()
    assert asyncio.run(main(5)) == list(range(5))
    assert [f.result(30)[0] for f in [slow.remote(7).future()]] == [7]
    time.sleep(0.2)
    assert store_objects() == before
