"""Arrays born in shared memory (numpy's allocator hook, NEP 49).

Workers allocate numpy arrays of at least 1 MiB in the arena, so a task's
result (or a put) refers to the block the array already lives in instead of
copying it (csrc/nr_born.h has the design).  Checked here: the values, that
the object's buffer *is* the worker's block (no byte copied), that a write
to the array after it was stored never reaches the object, that blocks come
back however the array ends (freed in the worker, the object dropped, the
worker SIGKILLed), fork inside a task, a full store, calloc, realloc, and
the threads of threaded and async actors.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

from conftest import store_objects
from nanoray._core import _runtime as rt

N = 2048
MIB = 1 << 20


def region(ray):
    return ray._api._backend.region


def settle(ray, used0, born0=0, timeout=10.0):
    """Waits until the store is back to `used0` bytes and `born0` born blocks."""
    deadline = time.monotonic() + timeout
    while True:
        store_objects()
        used, born = region(ray).stats()["store_used"], rt.born_count()[0]
        if (used <= used0 and born <= born0) or time.monotonic() > deadline:
            return used, born
        time.sleep(0.02)


def check_region(ray):
    v = region(ray).verify()
    assert v["code"] == 0 and v["orphan_blocks"] == 0, v


def test_a_returned_array_is_stored_in_the_block_the_worker_made_it_in(fresh):
    ray = fresh(num_cpus=2, object_store_memory=512 * MIB)

    @ray.remote(num_returns=2)
    def normal(seed):
        a = np.random.default_rng(seed).normal(size=(N, N))
        return a, rt.born_offset(a)

    @ray.remote
    def stats():
        return rt.born_stats()

    ray.get([normal.remote(0)[0], stats.remote()])       # exported, numpy loaded
    used0 = settle(ray, 0, timeout=0.5)[0]
    ref, off = normal.remote(7)
    a = ray.get(ref)
    assert np.array_equal(a, np.random.default_rng(7).normal(size=(N, N)))
    block = ray.get(off)
    assert block is not None, "the array was not born in the arena"
    # The object's only buffer is that very block: nothing was copied.
    assert rt.born_blocks(ref) == [block]
    assert region(ray).stats()["store_used"] - used0 < N * N * 8 + 64 * 1024
    s = ray.get(stats.remote())
    assert s["enabled"] and s["thread_ready"] and s["handoffs"] >= 1
    del a, ref, off
    assert settle(ray, used0) == (used0, 0)
    check_region(ray)


def test_results_of_numpy_operations_are_born_too(fresh):
    ray = fresh(num_cpus=1, object_store_memory=512 * MIB)
    x = ray.put(np.ones((1024, 1024)))

    @ray.remote
    def ops(x):
        return x + 1, x @ x, np.random.normal(size=(512, 512))

    refs = ray.get(ops.remote(x))       # a tuple of arrays, put one by one below
    plus, mat, rnd = refs
    assert (plus == 2).all() and (mat == 1024).all() and rnd.shape == (512, 512)

    @ray.remote(num_returns=2)
    def ops2(x):
        return x + 1, x @ x

    r1, r2 = ops2.remote(x)
    ray.wait([r1, r2], num_returns=2)
    assert len(rt.born_blocks(r1)) == 1 and rt.born_blocks(r1)[0]
    assert len(rt.born_blocks(r2)) == 1 and rt.born_blocks(r2)[0]
    assert (ray.get(r1) == 2).all() and (ray.get(r2) == 1024).all()


def test_a_write_after_put_or_return_never_reaches_the_stored_object(fresh):
    ray = fresh(num_cpus=2, object_store_memory=512 * MIB)

    @ray.remote
    class Keeper:
        def __init__(self):
            self.a = np.zeros(MIB)          # 8 MiB, born in the arena

        def value(self):
            return self.a

        def bump(self):
            self.a += 1
            return float(self.a[0])

    k = Keeper.remote()
    first = k.value.remote()
    assert ray.get(k.bump.remote()) == 1.0
    second = k.value.remote()               # handed off once: this one is copied
    assert ray.get(k.bump.remote()) == 2.0
    assert (ray.get(first) == 0).all()
    assert (ray.get(second) == 1).all()
    assert rt.born_blocks(first)[0] and rt.born_blocks(second) == []

    @ray.remote
    def put_then_write():
        a = np.arange(MIB, dtype=np.float64)
        ref = ray.put(a)
        a[:] = -1                           # private now: the object keeps 0..n
        back = ray.get(ref)                 # read here, through a shared mapping
        return ref, bool((back == np.arange(MIB)).all()), bool((a == -1).all())

    ref, same_here, written = ray.get(put_then_write.remote())
    assert same_here and written
    assert (ray.get(ref) == np.arange(MIB)).all()
    assert rt.born_blocks(ref)[0]
    check_region(ray)


def test_blocks_come_back_when_arrays_are_freed_in_the_worker_or_the_driver(fresh):
    ray = fresh(num_cpus=2, object_store_memory=512 * MIB)

    @ray.remote
    def churn(n):
        total = 0.0
        for i in range(n):                  # born and freed in the worker
            total += float(np.full(MIB // 2, i, dtype=np.float64).sum())
        return total, rt.born_stats()

    @ray.remote
    def make(i):
        return np.full(MIB, i, dtype=np.float64)

    ray.get([churn.remote(1), make.remote(0)])   # exported; numpy is loaded in the workers
    used0 = settle(ray, 0, timeout=0.5)[0]
    total, stats = ray.get(churn.remote(20))
    assert total == sum(i * (MIB // 2) for i in range(20))
    assert stats["born"] >= 20 and stats["live"] == 0
    assert settle(ray, used0) == (used0, 0)

    refs = [make.remote(i) for i in range(8)]
    arrays = ray.get(refs)
    assert all(rt.born_blocks(r) for r in refs)
    assert [a[0] for a in arrays] == list(range(8))
    assert rt.born_count()[0] == 8
    del refs, arrays                        # the objects go, and with them the blocks
    assert settle(ray, used0) == (used0, 0)
    check_region(ray)


def test_a_killed_worker_gives_back_the_blocks_its_arrays_held(fresh):
    ray = fresh(num_cpus=2, object_store_memory=512 * MIB)

    @ray.remote(max_restarts=0)
    class Hoarder:
        def __init__(self):
            self.keep = [np.ones(MIB) for _ in range(4)]     # 4 x 8 MiB, born here

        def pid(self):
            return os.getpid()

        def shared(self):
            self.keep.append(np.full(MIB, 3.0))
            return self.keep[-1]                              # kept, and stored

    used0 = settle(ray, 0, timeout=0.5)[0]
    h = Hoarder.remote()
    pid = ray.get(h.pid.remote())
    kept = h.shared.remote()
    assert (ray.get(kept) == 3).all()
    assert rt.born_count()[0] == 5
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while rt.born_count()[0] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rt.born_count()[0] == 1          # only the block the object still refers to
    assert (ray.get(kept) == 3).all()       # still readable
    check_region(ray)
    del kept, h
    assert settle(ray, used0)[1] == 0

    @ray.remote
    def again():
        return np.full(MIB, 5.0)

    assert (ray.get(again.remote()) == 5).all()   # the runtime keeps working
    check_region(ray)


def test_a_killed_pool_worker_gives_back_its_blocks(fresh):
    ray = fresh(num_cpus=1, object_store_memory=512 * MIB)

    @ray.remote(max_retries=0)
    def hold(path):
        arrays = [np.ones(MIB) for _ in range(3)]          # noqa: F841 (held)
        if path is None:
            return
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)

    ray.get(hold.remote(None))                              # exported, numpy loaded
    used0 = settle(ray, 0, timeout=0.5)[0]
    path = "/tmp/nanoray-born-%d" % os.getpid()
    ref = hold.remote(path)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert rt.born_count()[0] == 3
        os.kill(int(open(path).read()), signal.SIGKILL)
        with pytest.raises(Exception):
            ray.get(ref, timeout=10)
    finally:
        os.unlink(path)
    del ref                                 # its error
    assert settle(ray, used0) == (used0, 0)
    check_region(ray)


def test_fork_inside_a_task_copies_the_arrays_and_frees_nothing_twice(fresh):
    ray = fresh(num_cpus=1, object_store_memory=512 * MIB)

    @ray.remote
    def forks():
        a = np.ones(MIB)
        handed = np.full(MIB, 2.0)
        ref = ray.put(handed)               # handed off: private here
        r, w = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:                        # the child
            ok = True
            try:
                os.close(w)
                os.read(r, 1)               # the parent has written by now
                ok &= bool((a == 1).all())  # a copy: the parent's write is not seen
                ok &= bool((handed == 2).all())
                a[:] = 9                    # and its own writes stay here
                del a, handed               # freed here: the parent's blocks stay
                b = np.ones(MIB)            # not born: this is not a worker
                ok &= rt.born_offset(b) is None
                del b
            except BaseException:
                ok = False
            os.write(w2, b"1" if ok else b"0")
            os._exit(0)
        os.close(r)
        a[:] = 5
        os.write(w, b"x")
        child_ok = os.read(r2, 1) == b"1"
        os.waitpid(pid, 0)
        return child_ok, bool((a == 5).all()), a, ref

    child_ok, parent_ok, a, ref = ray.get(forks.remote())
    assert child_ok and parent_ok
    assert (a == 5).all() and (ray.get(ref) == 2).all()
    check_region(ray)


def test_a_fork_that_cannot_copy_the_arrays_leaves_them_out_of_the_childs_reach(fresh):
    # No address space left for the copies before the fork (RLIMIT_AS): the
    # child may not touch the parent's arrays (a touch faults), so a write
    # there never reaches the parent.  A fork to exec works as ever.
    ray = fresh(num_cpus=1, object_store_memory=512 * MIB)

    @ray.remote(max_retries=0)
    def forks():
        import resource
        import signal
        import subprocess
        a = np.zeros(4 * MIB)                                   # 32 MiB, born
        with open("/proc/self/status") as f:
            vm = [int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize")][0]
        old = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm + 16 * MIB, old[1]))
        try:
            pid = os.fork()
            if pid == 0:
                a[:] = 9.0                                      # faults
                os._exit(0)
            _, status = os.waitpid(pid, 0)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, old)
        out = subprocess.run(["true"]).returncode               # fork and exec
        return (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV,
                float(a.max()), out)

    assert ray.get(forks.remote()) == (True, 0.0, 0)
    check_region(ray)


def test_a_full_store_falls_back_to_malloc(fresh):
    ray = fresh(num_cpus=1, object_store_memory=64 * MIB)

    @ray.remote
    def big(n):
        a = np.arange(n, dtype=np.float64)
        return float(a.sum()), rt.born_offset(a) is not None, rt.born_stats()["fallbacks"]

    ray.get(big.remote(10))
    filler = [ray.put(np.ones(MIB)) for _ in range(6)]     # 48 of the 64 MiB
    n = 3 * MIB                                             # 24 MiB: past half the store
    total, born, fallbacks = ray.get(big.remote(n))
    assert total == n * (n - 1) / 2 and not born and fallbacks >= 1
    del filler
    store_objects()
    total, born, _ = ray.get(big.remote(n))
    assert total == n * (n - 1) / 2 and born
    check_region(ray)


def test_calloc_is_zeroed_on_reused_blocks_and_realloc_moves(fresh):
    ray = fresh(num_cpus=1, object_store_memory=256 * MIB)

    @ray.remote
    def zeros():
        dirty = np.full(2 * MIB, 7.0)       # 16 MiB of sevens, then freed
        off = rt.born_offset(dirty)
        del dirty
        z = np.zeros(2 * MIB)               # calloc: most likely the same block
        same = rt.born_offset(z) == off
        ok = bool((z == 0).all())
        grown = np.arange(MIB, dtype=np.float64)
        grown.resize(2 * MIB, refcheck=False)   # realloc of a born block
        ok2 = bool((grown[:MIB] == np.arange(MIB)).all()) and rt.born_offset(grown) is not None
        return ok, same, ok2

    ok, same, ok2 = ray.get(zeros.remote())
    assert ok and same and ok2


def test_threads_of_a_threaded_and_an_async_actor_allocate_through_the_hook(fresh):
    ray = fresh(num_cpus=2, object_store_memory=512 * MIB)

    @ray.remote(max_concurrency=4)
    class Threaded:
        def make(self, i, barrier_wait):
            time.sleep(barrier_wait)
            a = np.full(MIB, float(i))
            return a, threading.get_ident(), rt.born_offset(a) is not None

    t = Threaded.remote()
    out = ray.get([t.make.remote(i, 0.2) for i in range(4)])
    assert all(born for _, _, born in out)
    assert len({ident for _, ident, _ in out}) > 1          # several threads did it
    assert [a[0] for a, _, _ in out] == [0.0, 1.0, 2.0, 3.0]

    @ray.remote
    class Async:
        async def make(self, i):
            return np.full(MIB, float(i))

    s = Async.remote()
    refs = [s.make.remote(i) for i in range(3)]
    assert [ray.get(r)[0] for r in refs] == [0.0, 1.0, 2.0]
    assert all(rt.born_blocks(r) and rt.born_blocks(r)[0] for r in refs)
    check_region(ray)


def test_the_copy_path_when_turned_off(fresh):
    ray = fresh(num_cpus=1, object_store_memory=256 * MIB,
                _system_config={"born_in_shm": False})

    @ray.remote
    def make():
        return np.full(MIB, 4.0), rt.born_stats()["enabled"]

    ref = make.remote()
    a, enabled = ray.get(ref)
    assert (a == 4).all() and not enabled
    assert rt.born_count()[0] == 0


def test_the_driver_does_not_allocate_in_the_arena(fresh):
    ray = fresh(num_cpus=1, object_store_memory=256 * MIB)
    a = np.ones(MIB)
    assert rt.born_offset(a) is None and not rt.born_stats()["enabled"]
    ref = ray.put(a)
    a[:] = 2
    assert (ray.get(ref) == 1).all()


def test_a_result_the_task_keeps_is_remapped_when_the_task_ends(fresh):
    """A task's results are handed off without remapping them (so a returned
    temporary keeps its warm page tables); one the task kept gets its
    copy-on-write mapping as the task ends, before any user code runs."""
    ray = fresh(num_cpus=1, object_store_memory=256 * MIB)

    @ray.remote
    def temp():
        return np.ones(MIB)

    @ray.remote
    def keep():
        import builtins
        builtins._nanoray_kept = np.zeros(MIB)
        return builtins._nanoray_kept

    @ray.remote
    def write():
        import builtins
        builtins._nanoray_kept += 1
        s = rt.born_stats()
        return float(builtins._nanoray_kept[0]), s["settled"], s["handoffs"]

    assert (ray.get(temp.remote()) == 1).all()
    ref = keep.remote()
    value, settled, handoffs = ray.get(write.remote())
    assert value == 1 and settled == 1 and handoffs == 2
    assert (ray.get(ref) == 0).all() and rt.born_blocks(ref)[0]
    check_region(ray)


def test_an_object_in_a_born_block_is_spilled_whole_even_by_its_owner(fresh, tmp_path):
    """Spilling writes the object's bytes, not the owner's private writes:
    the worker that spills it maps the block privately (it kept the array
    and wrote to it), so it reads the store's pages through a mapping of
    their own."""
    ray = fresh(num_cpus=1, object_store_memory=64 * MIB,
                object_spilling_directory=str(tmp_path))

    @ray.remote
    def own_then_spill():
        a = np.full(5 * MIB, 3.0)           # 40 MiB, born here
        ref = ray.put(a)                    # handed off: private here from now on
        a[:] = 9.0
        try:
            ray.put(np.frombuffer(bytearray(30 * MIB), dtype=np.uint8))   # no room left
        except Exception:
            pass                            # full even after spilling: fine
        return ref, bool((a == 9).all())

    ref, kept = ray.get(own_then_spill.remote())
    assert kept
    assert region(ray).stats()["spills"] >= 1
    assert (ray.get(ref) == 3.0).all()      # restored from its file: the store's bytes
    check_region(ray)


def test_arrays_a_worker_keeps_leave_half_the_store_for_objects(fresh):
    # An actor keeps 64 MiB of arrays (weights, say) in a 96 MiB store.  At
    # most half the store is born arrays; the rest of its arrays go to the
    # private heap, so a 40 MiB put still fits (with 3/4 for arrays, all 64
    # MiB were born and it did not).
    ray = fresh(num_cpus=1, object_store_memory=96 * MIB)

    @ray.remote
    class Holder:
        def __init__(self):
            self.keep = [np.full(4 * MIB // 8, float(i)) for i in range(16)]

        def total(self):
            return sum(float(a[0]) for a in self.keep)

    h = Holder.remote()
    assert ray.get(h.total.remote()) == sum(range(16))
    used = ray._api._backend.region.stats()["store_used"]
    assert used <= 48 * MIB + MIB, used
    ref = ray.put(np.ones(40 * MIB // 8))
    assert ray.get(ref)[-1] == 1.0
    del ref
    ray.kill(h)


def test_a_thread_unknown_to_threading_cannot_change_a_returned_array(ray):
    # A task starts a raw thread (_thread, as C extensions' threads look)
    # that keeps writing the array the task returns: the stored object must
    # still never change once get() returned it.
    n = MIB // 8 * 2

    @ray.remote(max_retries=0)
    def returns_while_written():
        import _thread
        global _G, _STOP
        _G = np.zeros(n)
        _STOP = False
        g = _G

        def writer():
            k = 0
            while not _STOP:
                k += 1
                g[:1024] = k
        _thread.start_new_thread(writer, ())
        time.sleep(0.02)
        return _G

    @ray.remote(max_retries=0)
    def stop():
        global _STOP
        _STOP = True

    changed = 0
    for _ in range(10):
        r = returns_while_written.remote()
        x = ray.get(r)
        first = float(x[0])
        time.sleep(0.03)
        if float(x[0]) != first or float(ray.get(r)[0]) != first:
            changed += 1
        ray.get(stop.remote())
        del x, r
    assert changed == 0, "%d of 10 stored arrays changed after get()" % changed


def test_a_task_hiding_numpy_leaves_its_worker_running(tmp_path):
    # A driver without numpy: the worker looks for it at each task, and a
    # task that blocks it (sys.modules["numpy"] = None, as some test suites
    # do) must not break the tasks after it.
    script = tmp_path / "hide.py"
    script.write_text(
        "import os, sys, nanoray as ray\n"
        "ray.init(num_cpus=1)\n"
        "@ray.remote(max_retries=0)\n"
        "def hide():\n"
        "    sys.modules['numpy'] = None\n"
        "    return os.getpid()\n"
        "@ray.remote(max_retries=0)\n"
        "def after(x):\n"
        "    return os.getpid(), x + 1\n"
        "pid = ray.get(hide.remote())\n"
        "assert ray.get([after.remote(i) for i in range(3)]) == [(pid, 1), (pid, 2), (pid, 3)]\n"
        "assert 'numpy' not in sys.modules\n"
        "ray.shutdown()\n"
        "print('ok')\n")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["ok"], out.stderr[-2000:]


def test_a_writable_get_in_the_process_that_made_a_small_born_array_reads_the_store(
        fresh, monkeypatch):
    # Its own mapping of the block is private (it kept the array and wrote
    # to it since): a writable view reads the stored bytes, not its own.
    monkeypatch.setenv("NANORAY_BORN_MIN_BYTES", "16384")
    ray = fresh(num_cpus=1)

    @ray.remote
    class Keeper:
        def make(self):
            self.a = np.zeros(4096)                         # 32 KiB: born
            return self.a

        def write_then_read(self, box):
            self.a[:] = 7.0
            return float(ray.get(box[0])[0]), float(ray.get(box[0], writable=True)[0])

    k = Keeper.remote()
    ref = k.make.remote()
    assert ray.get(k.write_then_read.remote([ref]), timeout=30) == (0.0, 0.0)
    assert ray.get(ref)[0] == 0.0
