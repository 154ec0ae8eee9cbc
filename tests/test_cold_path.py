"""The cold path (csrc/nr_prefault.h): the driver's prefault thread keeps
store memory ready past brk, within its bounds, only while the runtime is
idle; it stops at shutdown and is not inherited by a fork; a process killed
while writing large values into that memory leaves the store exact."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import nanoray
from conftest import descendants, store_objects, wait_gone

MiB = 1 << 20
COMM = "nr-prefault"               # the thread's name (/proc/.../comm)


def prefault_threads(pid="self"):
    out = []
    for tid in os.listdir("/proc/%s/task" % pid):
        try:
            with open("/proc/%s/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() == COMM:
                    out.append(int(tid))
        except OSError:
            pass
    return out


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def region():
    return nanoray._api._backend.region


def test_the_thread_keeps_the_window_ready_and_stops_at_shutdown(fresh):
    fresh(num_cpus=2, object_store_memory=256 * MiB,
          _system_config={"object_store_prefault_bytes": 32 * MiB})
    r = region()
    tids = prefault_threads()
    assert len(tids) == 1
    assert wait_for(lambda: os.sched_getscheduler(tids[0]) == os.SCHED_IDLE)
    s = r.prefault_stats()
    assert s["pid"] == os.getpid() and s["window"] == 32 * MiB and s["errno"] == 0
    assert wait_for(lambda: r.prefault_stats()["committed"] >= 32 * MiB)
    time.sleep(0.1)
    assert r.prefault_stats()["committed"] < 32 * MiB + 4 * MiB   # no further than asked
    nanoray.shutdown()
    assert prefault_threads() == []                    # joined, not left running
    assert not r.prefault_running()
    assert r.prefault_stats()["pid"] == 0 and r.prefault_stats()["window"] == 0


def test_a_put_past_the_window_wakes_it_to_keep_ahead_and_values_stay_exact(fresh):
    fresh(num_cpus=2, object_store_memory=512 * MiB,
          _system_config={"object_store_prefault_bytes": 32 * MiB})
    r = region()
    assert wait_for(lambda: r.prefault_stats()["committed"] >= 32 * MiB)
    a = np.arange(12 * MiB, dtype=np.float64)          # 96 MiB: lands past the window
    ref = nanoray.put(a)
    brk = r.stats()["store_touched"]
    assert brk >= 96 * MiB
    # Ahead of brk while the block is live (it follows brk down once freed).
    assert wait_for(lambda: r.prefault_stats()["committed"] >= brk + 32 * MiB - 4096)
    assert (nanoray.get(ref) == a).all()               # the thread never wrote a byte of it

    @nanoray.remote
    def inc(x):
        return x + 1
    y = nanoray.get(inc.remote(ref))                   # a worker writes into ready pages
    assert (y == a + 1).all()
    del y, ref
    store_objects()
    assert wait_for(lambda: r.stats()["store_used"] < MiB)
    assert r.arena_check() == 0
    assert r.verify()["code"] == 0
    assert r.prefault_stats()["committed"] <= r.stats()["store_capacity"]


def test_the_window_never_passes_the_store(fresh):
    fresh(num_cpus=1, object_store_memory=16 * MiB,
          _system_config={"object_store_prefault_bytes": 1 << 40})
    r = region()
    cap = r.stats()["store_capacity"]
    assert wait_for(lambda: r.prefault_stats()["committed"] >= cap)
    time.sleep(0.05)
    assert r.prefault_stats()["committed"] == cap
    assert r.prefault_stats()["window"] == 16 * MiB    # capped at object_store_memory


@pytest.mark.parametrize("how", ["config", "env"])
def test_zero_turns_it_off(fresh, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("NANORAY_PREFAULT_BYTES", "0")
        fresh(num_cpus=1, object_store_memory=64 * MiB)
    else:
        fresh(num_cpus=1, object_store_memory=64 * MiB,
              _system_config={"object_store_prefault_bytes": 0})
    assert prefault_threads() == []
    assert region().prefault_stats()["window"] == 0
    assert nanoray.get(nanoray.put(np.ones(MiB)))[0] == 1.0


def test_a_bad_size_is_refused():
    for bad in (-1, "lots"):
        with pytest.raises(ValueError, match="object_store_prefault_bytes"):
            nanoray.init(num_cpus=1, object_store_memory=64 * MiB,
                         _system_config={"object_store_prefault_bytes": bad})
    assert not nanoray.is_initialized()


def test_the_default_is_a_quarter_of_the_store_at_most_512_mib(fresh, monkeypatch):
    monkeypatch.delenv("NANORAY_PREFAULT_BYTES", raising=False)
    fresh(num_cpus=1, object_store_memory=64 * MiB)
    assert region().prefault_stats()["window"] == 16 * MiB
    fresh(num_cpus=1, object_store_memory=4 << 30)
    assert region().prefault_stats()["window"] == 512 * MiB


def test_start_twice_in_one_process_is_refused(fresh):
    fresh(num_cpus=1, object_store_memory=64 * MiB)
    with pytest.raises(OSError, match="prefault"):
        region().prefault_start(MiB)


FORKS = """
    import os, sys, time
    import numpy as np
    import nanoray as ray
    ray.init(num_cpus=2, object_store_memory=512 << 20,
             _system_config={"object_store_prefault_bytes": 256 << 20})
    r = ray._api._backend.region

    def threads():
        out = []
        for t in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/comm" % t) as f:
                if f.read().strip() == "nr-prefault":
                    out.append(t)
        return out
    assert len(threads()) == 1
    # Fork while it is busy: the child must not believe it has the thread.
    pid = os.fork()
    if pid == 0:
        ok = threads() == [] and not r.prefault_running()
        ray.shutdown()                  # a forked child's: leaves the parent's runtime running
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert len(threads()) == 1 and r.prefault_running()
    ref = ray.put(np.ones(32 << 20))    # the parent's store and thread work on
    assert ray.get(ref)[5] == 1.0
    deadline = time.monotonic() + 30
    while r.prefault_stats()["committed"] < (256 << 20) + (256 << 20) - 4096:
        assert time.monotonic() < deadline, r.prefault_stats()
        time.sleep(0.01)
    del ref
    ray.shutdown()
    assert threads() == []
    print("ok", flush=True)
"""


def test_a_fork_does_not_inherit_the_thread(tmp_path):
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent(FORKS))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


KILLED = """
    import os, sys, time
    import nanoray as ray
    ray.init(num_cpus=2, object_store_memory=4 << 30,
             _system_config={"object_store_prefault_bytes": 3 << 30})
    print(ray._api._backend.zygote.pid, flush=True)
    time.sleep(3600)
"""


def test_a_driver_killed_mid_prefault_leaves_no_process(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        zygote = int(p.stdout.readline())
        assert prefault_threads(p.pid), "no prefault thread in the driver"
        time.sleep(0.05)                               # 3 GiB take ~1.5 s: mid-way
        kids = descendants(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        assert wait_gone([zygote] + kids) == []
    finally:
        p.kill()
        p.wait()


def test_workers_killed_while_writing_large_values_leave_the_store_exact(fresh):
    """SIGKILL lands while a worker copies tens of MiB into fresh, prefaulted
    or reused memory: its block in flight is given back, nothing else moves."""
    ray = fresh(num_cpus=2, object_store_memory=1 << 30,
                _system_config={"object_store_prefault_bytes": 128 * MiB})
    r = region()

    @ray.remote(max_retries=0)
    def big(n):
        while n:
            ray.put(np.ones(n))                        # dropped at once: reused next time
        return 0

    ray.get(big.remote(0))                             # exported: the baseline holds it
    store_objects()
    used = r.stats()["store_used"]
    for k in range(12):
        ref = big.remote((8 + 9 * k % 40) * MiB // 8)
        time.sleep(0.05 + (k % 5) * 0.013)
        for pid in r.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        with pytest.raises(ray.exceptions.WorkerCrashedError):
            ray.get(ref, timeout=60)
        del ref
        assert r.arena_check() == 0, k
    store_objects()
    assert wait_for(lambda: r.stats()["store_used"] <= used, timeout=20), r.stats()
    v = r.verify()
    assert v["code"] == 0 and v["orphan_blocks"] == 0, v


def test_it_keeps_off_while_a_task_runs(fresh):
    """Its kernel work slows a running task even from an idle CPU, so it
    waits for the pool to be idle (csrc/nr_prefault.c, wait_quiet)."""
    fresh(num_cpus=2, object_store_memory=1 << 30,
          _system_config={"object_store_prefault_bytes": 256 * MiB})
    r = region()
    assert wait_for(lambda: r.prefault_stats()["committed"] >= 256 * MiB, timeout=20)

    @nanoray.remote
    def busy(path, seconds):
        open(path, "w").close()
        time.sleep(seconds)
        return 1
    import tempfile
    flag = os.path.join(tempfile.mkdtemp(), "started")
    ref = busy.remote(flag, 1.5)
    assert wait_for(lambda: os.path.exists(flag))
    before = r.prefault_stats()["prefaulted"]
    x = nanoray.put(np.ones(32 * MiB))                 # 256 MiB: the window must move
    time.sleep(0.5)
    assert r.prefault_stats()["prefaulted"] == before  # not while the task runs
    assert nanoray.get(ref) == 1
    brk = r.stats()["store_touched"]
    assert wait_for(lambda: r.prefault_stats()["committed"] >= brk + 256 * MiB - 4096,
                    timeout=20)                       # and at once after
    del x
    os.remove(flag)
