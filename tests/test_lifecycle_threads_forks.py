"""The runtime against threads, forks and exec: a thread that starts nanoray
and exits, a forked child that exits or outlives its parent, programs a task
runs, a fork that fails in the zygote, and what stays mapped after shutdown."""

import errno
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import nanoray
from conftest import wait_gone
from nanoray._core import _runtime as rt

STORE = 1 << 28


def _run_script(tmp_path, source, *args):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- a thread that starts the runtime, then exits (issue #7, 3) -------------

def test_the_runtime_outlives_the_thread_that_started_it(fresh):
    if nanoray.is_initialized():
        nanoray.shutdown()

    @nanoray.remote
    def double(x):
        return 2 * x

    def first_call():
        # A pool thread's first API call starts the runtime.
        nanoray.init(num_cpus=2, object_store_memory=STORE)
        return nanoray.get(double.remote(1))
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(first_call).result(timeout=60) == 2
    # The pool's thread has exited.  A parent-death signal tied to it would
    # have killed the zygote, and with it every worker.
    time.sleep(0.3)
    assert nanoray.is_initialized()
    assert nanoray._api._backend.zygote.poll() is None, "the zygote died with the thread"
    assert nanoray.get(double.remote(21), timeout=20) == 42


# --- forked children (issue #7, 4) ------------------------------------------

CHILD_EXITS = """
    import os, sys
    import nanoray as ray
    ray.init(num_cpus=2, object_store_memory=%d)

    @ray.remote
    def double(x):
        return 2 * x
    assert ray.get(double.remote(1)) == 2
    pid = os.fork()
    if pid == 0:
        sys.exit(0)                 # a normal exit: atexit runs nanoray.shutdown()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    print(ray.get(double.remote(21), timeout=20), flush=True)
""" % STORE


def test_a_forked_child_exiting_leaves_the_parents_runtime_running(tmp_path):
    proc = _run_script(tmp_path, CHILD_EXITS)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "42"


CHILD_OUTLIVES = """
    import os, time
    import nanoray as ray
    ray.init(num_cpus=2, object_store_memory=%d)

    @ray.remote
    def pid():
        return os.getpid()
    ray.get([pid.remote() for _ in range(4)])
    b = ray._api._backend
    end = time.time() + 60          # both workers up (one may have run all four)
    while len(b.region.worker_pids()) < 2 and time.time() < end:
        time.sleep(0.01)
    child = os.fork()
    if child == 0:
        time.sleep(120)             # outlives the driver, and must not keep the runtime
        os._exit(0)
    print(child, b.zygote.pid, *b.region.worker_pids(), flush=True)
    time.sleep(3600)
""" % STORE


def test_a_forked_child_does_not_keep_the_runtime_alive_after_the_driver_dies(tmp_path):
    proc = _run_script(tmp_path, CHILD_OUTLIVES)
    pids = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        if len(pids) < 4:
            proc.kill()             # its stderr ends once it (and its runtime) are gone
            pytest.fail("the driver printed %r: %s" % (pids, proc.stderr.read()))
        child, runtime = pids[0], pids[1:]
        proc.kill()
        proc.wait()
        assert wait_gone(runtime, timeout=5) == [], \
            "the zygote and its workers outlived a SIGKILLed driver while its forked child lived"
        assert wait_gone([child], timeout=0) == [child]   # the child itself lives on
    finally:
        proc.kill()
        proc.wait()
        _kill(pids)
        assert wait_gone(pids, timeout=10) == []


# --- what stays mapped after shutdown (issue #7, 8) -------------------------

def _store_mapped(inode):
    with open("/proc/self/maps") as f:
        return [line for line in f
                if "memfd:nanoray" in line and line.split()[4] == str(inode)]


def test_shutdown_unmaps_the_store_despite_nanorays_own_caches(fresh):
    ray = fresh(num_cpus=2, object_store_memory=STORE)
    inode = os.fstat(ray._api._backend.region.fd).st_ino

    @ray.remote
    def add_one(x):
        return x + 1
    assert ray.get(add_one.remote(1)) == 2
    assert add_one.options(num_cpus=1).remote(2).future().result(timeout=20) == 3
    assert _store_mapped(inode), "the test looks for the wrong mapping"
    ray.shutdown()
    deadline = time.monotonic() + 5          # the ref-watcher thread ends on its own
    while True:
        gc.collect()
        left = _store_mapped(inode)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == [], "the store stays mapped after shutdown: %s" % left
    # The function still works in the next runtime (it is exported again).
    ray = fresh(num_cpus=1, object_store_memory=STORE)
    assert ray.get(add_one.remote(41)) == 42


# --- the store's descriptors across exec (issue #7, 9) ----------------------

def test_programs_a_task_runs_do_not_inherit_the_store(fresh):
    ray = fresh(num_cpus=2, object_store_memory=STORE)

    @ray.remote
    def fds_of_a_child_program():
        out = subprocess.run(["ls", "-l", "/proc/self/fd/"], close_fds=False,
                             capture_output=True, text=True, check=True).stdout
        own = " ".join(os.readlink("/proc/self/fd/%s" % fd) for fd in os.listdir("/proc/self/fd")
                       if os.path.exists("/proc/self/fd/%s" % fd))
        return out, own
    child, own = ray.get(fds_of_a_child_program.remote())
    assert "memfd:nanoray" in own and "eventfd" in own, "the test looks for the wrong fds"
    assert "memfd:nanoray" not in child, child
    assert "eventfd" not in child, child


# --- a fork that fails in the zygote (issue #7, 10) -------------------------

def test_a_failed_fork_gives_its_slot_back_and_is_retried_later():
    from nanoray._zygote import Spawner
    region = rt.Region.create(1 << 20, 2000, min_workers=2, max_workers=4, max_procs=8,
                              max_objects=1024, max_tasks=1024, max_deps=2048)
    now = [0.0]
    forks = []

    def fork():
        forks.append(now[0])
        if len(forks) == 2:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return 1 << 30 | len(forks)           # a made-up pid: no process is made

    def start(slot):
        pytest.fail("the child's side ran in the test process")

    spawner = Spawner(region, start, fork=fork, clock=lambda: now[0])
    spawner.spawn()
    # The first of the two workers started; the second slot went back.
    assert len(spawner.children) == 1
    stats = region.stats()
    assert (stats["workers"], stats["starting"]) == (1, 1)
    wait_ms = spawner.poll_timeout_ms()
    assert wait_ms is not None and wait_ms > 0    # the zygote wakes up to retry
    spawner.spawn()                               # too early: nothing happens
    assert len(forks) == 2
    now[0] += 10
    spawner.spawn()                               # the request was not lost
    assert len(forks) == 3
    assert len(set(spawner.children.values())) == 2
    stats = region.stats()
    assert (stats["workers"], stats["starting"]) == (2, 2)
    assert spawner.poll_timeout_ms() is None


def test_a_failed_fork_for_an_actor_asks_for_it_again():
    from nanoray._core._ctest import CRegion
    r = CRegion()
    slot, _ = r.actor_create(r.put())
    assert slot > 0
    assert r.spawn_take() == [slot]
    assert r.spawn_take() == []
    r.spawn_giveback(slot)                        # its fork failed
    assert r.spawn_take() == [slot]
    assert r.check() == 0


def test_a_forked_child_uses_the_store_without_the_parents_small_block_cache(ray):
    # A child forked from the driver acts in the driver's slot: the blocks
    # the driver keeps at hand stay the driver's (a child killed inside a
    # section would otherwise undo a block under the parent's feet).
    region = ray._api._backend.region
    assert ray.get(ray.put(1)) == 1 and not region.borrowed
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = region.borrowed and ray.get(ray.put((1, "x"))) == (1, "x")
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not region.borrowed and ray.get(ray.put(2)) == 2
    assert region.verify()["code"] == 0
