"""The drop-ins for multiprocessing.Pool and concurrent.futures: each behaves
as the stdlib original does, failures included, and leaves nothing running."""

import asyncio
import concurrent.futures as cf
import multiprocessing
import multiprocessing.pool
import os
import time

import numpy as np
import pytest

from conftest import wait_gone

T = 30


def square(x):
    return x * x


def add(a, b=0):
    return a + b


def fails_at_3(x):
    if x == 3:
        raise ZeroDivisionError("x is 3")
    return x


def dies_at_2(x):
    if x == 2:
        os._exit(1)
    return x


def nap(s):
    time.sleep(s)
    return s


def set_tag(tag):
    os.environ["NANORAY_TEST_TAG"] = tag
    os.environ["NANORAY_TEST_INITS"] = str(int(os.environ.get("NANORAY_TEST_INITS", "0")) + 1)


def tag_and_pid(_=None):
    return os.environ.get("NANORAY_TEST_TAG"), os.environ.get("NANORAY_TEST_INITS"), os.getpid()


def total(a):
    return float(a.sum())


def endless():
    i = 0
    while True:
        yield i
        i += 1


def stops_at_3(x):
    if x == 3:
        raise StopIteration("at 3")
    return x


def broken_iterable():
    yield 1
    yield 2
    raise OSError("the input ended badly")


# -- multiprocessing.Pool ------------------------------------------------------


def test_pool_maps_and_applies_as_the_stdlib_does(ray):
    from nanoray.util.multiprocessing import Pool
    xs = list(range(37))
    with Pool(2) as p:
        assert p.map(square, xs) == [x * x for x in xs]
        assert p.map(square, xs, chunksize=5) == [x * x for x in xs]
        assert p.map(square, iter(xs)) == [x * x for x in xs]          # any iterable
        assert p.map(square, []) == []
        assert p.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(p.imap(square, xs, chunksize=4)) == [x * x for x in xs]
        assert p.map(square, xs, chunksize=np.int64(3)) == [x * x for x in xs]   # as the stdlib
        assert sorted(p.imap_unordered(square, xs)) == [x * x for x in xs]
        assert p.apply(add, (1,), {"b": 5}) == 6
        got = []
        r = p.apply_async(square, (9,), callback=got.append)
        assert r.get(T) == 81 and r.ready() and r.successful() and got == [81]
        m = p.map_async(square, xs, callback=got.append)
        m.wait(T)
        assert m.get(T) == got[1] == [x * x for x in xs]
        s = p.starmap_async(add, [(1, 1)] * 3)
        assert s.get(T) == [2, 2, 2]
        it = p.imap(square, endless(), chunksize=3)            # read lazily
        assert [next(it) for _ in range(10)] == [x * x for x in range(10)]
        arrays = [np.full(100_000, i, dtype=np.float64) for i in range(4)]
        assert p.map(total, arrays) == [i * 100_000.0 for i in range(4)]
        # Chunks of a list, tuple or range are slices of it, in order.
        assert p.map(square, range(3, 40, 2), chunksize=4) == [x * x for x in range(3, 40, 2)]
        assert p.map(square, tuple(xs), chunksize=6) == [x * x for x in xs]
        assert p.starmap(add, [(i, i) for i in range(9)], chunksize=2) == list(range(0, 18, 2))
        # A range longer than sys.maxsize is read lazily, as the stdlib does.
        it = p.imap(square, range(2 ** 70), chunksize=2)
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        # A StopIteration the function raises fails the call: it does not
        # end the chunk early (which would shift every later result).
        for call in (lambda: p.map(stops_at_3, range(8), chunksize=4),
                     lambda: p.starmap(stops_at_3, [(i,) for i in range(8)], chunksize=4)):
            with pytest.raises(StopIteration, match="at 3"):
                call()
        # As Ray's actors once they run, the pool's processes hold no CPU:
        # tasks run beside a pool of num_cpus processes.
        assert ray.get([ray.remote(square).remote(i) for i in range(4)], timeout=T) == \
            [0, 1, 4, 9]


class Scaled:
    """A callable carrying data, as joblib's batches do."""

    def __init__(self, a):
        self.a = a

    def __call__(self):
        return float(self.a[0])


def test_pools_keep_functions_loaded_but_not_callables_that_carry_data(ray):
    from conftest import store_objects
    from nanoray.util.concurrent.futures import RayExecutor
    from nanoray.util.multiprocessing import Pool
    with Pool(2) as p, RayExecutor(max_workers=2) as ex:
        p.map(square, range(4))
        ex.submit(square, 1).result(T)
        before = store_objects()
        for i in range(12):                       # 12 x 32 MiB: gone after each call
            big = np.full(4 << 20, i, dtype=np.float64)
            assert p.apply(Scaled(big)) == float(i)
            assert ex.submit(Scaled(big)).result(T) == float(i)
        assert p.map(square, range(4)) == [0, 1, 4, 9]
        assert store_objects() <= before + 1


def test_pool_initializer_runs_in_each_process_and_maxtasksperchild_renews_them(ray):
    from nanoray.util.multiprocessing import Pool
    p = Pool(2, initializer=set_tag, initargs=("ready",))
    seen = p.map(tag_and_pid, range(40), chunksize=1)
    assert {(tag, inits) for tag, inits, _ in seen} == {("ready", "1")}
    assert len({pid for _, _, pid in seen}) == 2
    p.close()
    p.join()
    assert wait_gone([pid for _, _, pid in seen]) == []
    p = Pool(2, initializer=set_tag, initargs=("fresh",), maxtasksperchild=3)
    seen = p.map(tag_and_pid, range(24), chunksize=1)
    assert {(tag, inits) for tag, inits, _ in seen} == {("fresh", "1")}
    assert len({pid for _, _, pid in seen}) >= 24 // 3      # a new process every 3 chunks
    p.terminate()
    assert wait_gone([pid for _, _, pid in seen]) == []


def test_pool_errors_reach_the_caller_as_the_functions_own(ray):
    from nanoray.util.multiprocessing import Pool
    with Pool(2) as p:
        with pytest.raises(ZeroDivisionError, match="x is 3") as info:
            p.map(fails_at_3, range(8))
        assert isinstance(info.value.__cause__, multiprocessing.pool.RemoteTraceback)
        assert "fails_at_3" in str(info.value.__cause__)
        out = []
        with pytest.raises(ZeroDivisionError):
            for v in p.imap(fails_at_3, range(8)):
                out.append(v)
        assert out == [0, 1, 2]                     # the values before the failure
        for chunksize in (2, 3):                     # the failing item's chunk mates too,
            it = p.imap(fails_at_3, range(6), chunksize=chunksize)   # each in its place
            out = []
            for _ in range(6):
                try:
                    out.append(next(it))
                except ZeroDivisionError as e:
                    assert isinstance(e.__cause__, multiprocessing.pool.RemoteTraceback)
                    out.append("error")
            assert out == [0, 1, 2, "error", 4, 5], chunksize
            with pytest.raises(StopIteration):
                next(it)
        errors = []
        r = p.map_async(fails_at_3, range(8), error_callback=errors.append)
        r.wait(T)
        assert not r.successful() and isinstance(errors[0], ZeroDivisionError)
        with pytest.raises(OSError, match="ended badly"):
            p.map(square, broken_iterable())
        it = p.imap(square, broken_iterable())
        assert next(it) == 1 and next(it) == 4
        with pytest.raises(OSError, match="ended badly"):
            next(it)
        with pytest.raises(TypeError):
            p.map(42, [1])
        with pytest.raises(ValueError):
            p.map(square, [1], chunksize=0)
        r = p.apply_async(nap, (1.0,))
        with pytest.raises(multiprocessing.TimeoutError):
            r.get(0.05)
        with pytest.raises(ValueError):
            r.successful()                          # not ready yet
        with pytest.raises(multiprocessing.TimeoutError):
            p.imap(nap, [1.0]).next(timeout=0.05)
        assert p.map(square, range(5)) == [0, 1, 4, 9, 16]     # the pool goes on
    with pytest.raises(ValueError):
        Pool(0)


def test_pool_replaces_a_worker_that_dies_and_fails_only_its_chunk(ray):
    from nanoray import exceptions
    from nanoray.util.multiprocessing import Pool
    with Pool(2) as p:
        with pytest.raises(exceptions.RayActorError):      # the stdlib's pool would hang
            p.map(dies_at_2, range(6), chunksize=1)
        assert p.map(square, range(6)) == [0, 1, 4, 9, 16, 25]
        assert p.apply(dies_at_2, (1,)) == 1


def test_pool_close_join_terminate_and_the_context_manager(ray):
    from nanoray.util.multiprocessing import Pool
    p = Pool(2)
    pids = {pid for _, _, pid in p.map(tag_and_pid, range(8), chunksize=1)}
    with pytest.raises(ValueError, match="still running"):
        p.join()
    late = p.map_async(nap, [0.2] * 4, chunksize=1)
    called = []
    p.apply_async(nap, (0.1,), callback=lambda v: (time.sleep(0.3), called.append(v)))
    p.close()
    with pytest.raises(ValueError, match="not running"):
        p.map(square, [1])
    with pytest.raises(ValueError, match="not running"):
        p.apply_async(square, (1,))
    p.join()                                       # waits for the work already given
    assert late.get(0) == [0.2] * 4 and called == [0.1]   # and its callbacks
    assert wait_gone(list(pids)) == []

    p = Pool(2)
    slow = p.map_async(nap, [5.0] * 4, chunksize=1)
    it = p.imap(nap, [5.0] * 4)
    t0 = time.monotonic()
    p.terminate()                                  # kills the processes at once
    assert time.monotonic() - t0 < 5
    with pytest.raises(RuntimeError, match="terminated"):
        slow.get(T)                                # fails rather than waiting forever
    with pytest.raises(RuntimeError, match="terminated"):
        next(it)

    with Pool(1) as p:
        pid = p.apply(tag_and_pid)[2]
    assert wait_gone([pid]) == []                  # __exit__ terminates, as in the stdlib


# -- concurrent.futures ------------------------------------------------------------


def test_executor_submit_map_wait_and_as_completed(ray):
    from nanoray.util.concurrent.futures import RayExecutor
    with RayExecutor() as ex:
        f = ex.submit(add, 2, b=3)
        assert f.result(T) == 5 and f.done() and not f.cancelled()
        assert list(ex.map(square, range(20))) == [x * x for x in range(20)]
        assert list(ex.map(add, range(10), range(10), chunksize=3)) == \
            [2 * x for x in range(10)]
        fs = [ex.submit(nap, s) for s in (0.3, 0.1, 0.2)]
        done, not_done = cf.wait(fs, timeout=T, return_when=cf.FIRST_COMPLETED)
        assert done and len(done) + len(not_done) == 3
        assert sorted(f.result() for f in cf.as_completed(fs, timeout=T)) == [0.1, 0.2, 0.3]
        err = ex.submit(fails_at_3, 3)
        with pytest.raises(ZeroDivisionError, match="x is 3"):
            err.result(T)
        assert isinstance(err.exception(), ZeroDivisionError)
        with pytest.raises(cf.TimeoutError):
            list(ex.map(nap, [2.0, 2.0], timeout=0.2))
        arr = np.arange(1_000_000, dtype=np.float64)
        assert ex.submit(total, arr).result(T) == float(arr.sum())

        async def awaited():
            return await asyncio.wrap_future(ex.submit(square, 12))
        assert asyncio.run(awaited()) == 144


def test_executor_cancels_calls_that_have_not_started(ray):
    from nanoray.util.concurrent.futures import RayExecutor
    cpus = int(ray.cluster_resources()["CPU"])
    # More workers than CPUs: the extra calls wait in the scheduler.
    ex = RayExecutor(max_workers=cpus + 2)
    running = [ex.submit(nap, 1.0) for _ in range(cpus)]
    time.sleep(0.3)
    queued = [ex.submit(nap, 0.0) for _ in range(2)]
    assert all(f.cancel() for f in queued)           # never run
    assert all(f.cancelled() for f in queued)
    with pytest.raises(cf.CancelledError):
        queued[0].result(T)
    assert not running[0].cancel()                   # started: runs on
    assert [f.result(T) for f in running] == [1.0] * cpus
    ex.shutdown()
    # A bounded executor: calls past max_workers wait in it, in order.
    ex = RayExecutor(max_workers=1)
    fs = [ex.submit(nap, 0.3) for _ in range(4)]
    time.sleep(0.1)
    t0 = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - t0 < 2
    assert fs[0].result(0) == 0.3 and all(f.cancelled() for f in fs[1:])
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    with pytest.raises(ValueError):
        RayExecutor(max_workers=0)


def test_executor_initializer_runs_once_per_worker_process(ray):
    from nanoray.util.concurrent.futures import RayExecutor
    with RayExecutor(initializer=set_tag, initargs=("exec",)) as ex:
        seen = [f.result(T) for f in [ex.submit(tag_and_pid) for _ in range(30)]]
    assert {tag for tag, _, _ in seen} == {"exec"}
    # Once per process for this executor (a process may have run other inits).
    by_pid = {}
    for _, inits, pid in seen:
        by_pid.setdefault(pid, set()).add(inits)
    assert all(len(v) == 1 for v in by_pid.values()), by_pid


# -- joblib and Dask ---------------------------------------------------------------


def test_joblib_runs_on_nanoray_under_both_names(ray):
    import joblib
    from nanoray.util.joblib import register_ray
    register_ray()
    for name in ("nanoray", "ray"):
        with joblib.parallel_backend(name, n_jobs=2):
            out = joblib.Parallel()(joblib.delayed(tag_and_pid)() for _ in range(40))
            assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(500)) == \
                [i * i for i in range(500)]
        pids = {pid for _, _, pid in out}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2
        with joblib.parallel_backend(name, n_jobs=2):     # the pool is kept, as loky's is
            again = joblib.Parallel()(joblib.delayed(tag_and_pid)() for _ in range(40))
        assert {pid for _, _, pid in again} <= pids
    with joblib.parallel_backend("nanoray"):
        arrays = [np.full(50_000, i, dtype=np.float64) for i in range(3)]
        assert joblib.Parallel(n_jobs=-1)(joblib.delayed(total)(a) for a in arrays) == \
            [i * 50_000.0 for i in range(3)]
        with pytest.raises(ZeroDivisionError, match="x is 3"):
            joblib.Parallel(n_jobs=2)(joblib.delayed(fails_at_3)(i) for i in range(6))
        # A failed call ends its pool; the next call gets a fresh one.
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(4)) == \
            [0, 1, 4, 9]
    ray.shutdown()
    assert wait_gone(list(pids)) == []                # shutdown ends the kept pools
    ray.init(num_cpus=2, object_store_memory=1 << 30)
    with joblib.parallel_backend("nanoray", n_jobs=2):    # a new runtime: a new pool
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_dask_graphs_run_as_nanoray_tasks(ray):
    import dask
    import dask.array as da
    import dask.bag as db
    from nanoray.util.dask import disable_dask_on_ray, enable_dask_on_ray, ray_dask_get
    x = da.random.RandomState(0).random((600, 600), chunks=(200, 200))
    y = (x + x.T).sum(axis=0)
    assert np.allclose(y.compute(scheduler=ray_dask_get), y.compute(scheduler="sync"))
    assert db.from_sequence(range(10), npartitions=3).map(square).sum() \
        .compute(scheduler=ray_dask_get) == sum(i * i for i in range(10))

    @dask.delayed
    def where():
        return os.getpid()

    @dask.delayed
    def plus(a, b):
        return a + b
    one, (two, three) = dask.compute(plus(0, 1), [plus(1, 1), plus(plus(1, 1), 1)],
                                     scheduler=ray_dask_get)
    assert (one, two, three) == (1, 2, 3)
    assert dask.compute(where(), scheduler=ray_dask_get)[0] != os.getpid()
    with pytest.raises(ZeroDivisionError, match="x is 3"):
        dask.compute(dask.delayed(fails_at_3)(3), scheduler=ray_dask_get)
    with enable_dask_on_ray():
        assert dask.compute(where())[0] != os.getpid()
    disable_dask_on_ray()
    assert dask.compute(where(), scheduler="sync")[0] == os.getpid()


def make_block(i):
    return np.full(1 << 20, i, dtype=np.float64)          # 8 MiB


def block_sum(a):
    return float(a.sum())


def test_dask_frees_intermediate_results_once_used(fresh):
    import dask
    ray = fresh(num_cpus=2, object_store_memory=64 << 20)
    # 40 blocks of 8 MiB through a 64 MiB store: only if each block goes
    # once summed does this run without spilling.
    sums = [dask.delayed(block_sum)(dask.delayed(make_block)(i)) for i in range(40)]
    from nanoray.util.dask import ray_dask_get
    assert dask.compute(sums, scheduler=ray_dask_get)[0] == \
        [float(i * (1 << 20)) for i in range(40)]
    assert ray._api._backend.region.stats()["spills"] == 0


# -- what the adversarial review found ------------------------------------------


def test_pool_reads_iterables_without_blocking_its_results_or_other_jobs(ray):
    import queue
    from nanoray.util.multiprocessing import Pool
    with Pool(2) as p:
        q = queue.Queue()
        p.apply_async(nap, (0.2,), callback=q.put)
        # The iterable waits for the callback: reading it must not stop the
        # pool from delivering that result (the stdlib's gives [0.2]).
        assert list(p.imap(square, (q.get(timeout=10) for _ in range(1)))) == [0.2 * 0.2]
        t0 = time.monotonic()
        assert p.map(square, []) == []                   # an empty map waits for nothing
        busy = p.map_async(nap, [1.0] * 4, chunksize=1)
        assert p.map(square, []) == [] and time.monotonic() - t0 < 0.5
        busy.get(T)


def test_pool_runs_callbacks_one_at_a_time_in_one_thread(ray):
    import threading
    from nanoray.util.multiprocessing import Pool
    seen = {"count": 0, "inside": 0, "most": 0, "threads": set()}

    def callback(_):
        seen["inside"] += 1
        seen["most"] = max(seen["most"], seen["inside"])
        seen["threads"].add(threading.current_thread().name)
        n = seen["count"]
        time.sleep(0)
        seen["count"] = n + 1
        seen["inside"] -= 1
    with Pool(2) as p:
        results = [p.apply_async(square, (i,), callback=callback) for i in range(300)]
        assert [r.get(T) for r in results] == [i * i for i in range(300)]
    assert seen["count"] == 300 and seen["most"] == 1 and len(seen["threads"]) == 1
    assert threading.current_thread().name not in seen["threads"]


def test_pools_and_executors_fail_their_waiters_when_nanoray_stops(fresh):
    import threading
    from nanoray import exceptions
    from nanoray.util.concurrent.futures import RayExecutor
    from nanoray.util.multiprocessing import Pool
    ray = fresh(num_cpus=2)
    p = Pool(2)
    ex = RayExecutor(max_workers=2)
    outcome = {}

    def pool_waiter():
        try:
            p.map(nap, [3.0, 3.0], chunksize=1)
        except BaseException as e:
            outcome["pool"] = e

    def executor_waiter():
        try:
            ex.submit(nap, 3.0).result()
        except BaseException as e:
            outcome["executor"] = e
    threads = [threading.Thread(target=f) for f in (pool_waiter, executor_waiter)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    ray.shutdown()
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "a waiter hangs after shutdown"
    assert isinstance(outcome.get("pool"), exceptions.RaySystemError), outcome
    assert isinstance(outcome.get("executor"), exceptions.RaySystemError), outcome


def test_pools_and_executors_nobody_holds_are_collected(ray):
    import gc
    import threading
    from nanoray.util.concurrent.futures import RayExecutor
    from nanoray.util.multiprocessing import Pool
    threads_before = threading.active_count()
    pids = []
    for _ in range(3):
        p = Pool(2)
        pids += [pid for _, _, pid in p.map(tag_and_pid, range(4), chunksize=1)]
        ex = RayExecutor(max_workers=2)
        ex.submit(square, 2).result(T)
        del p, ex
    gc.collect()
    assert wait_gone(pids) == []                         # its actors are ended
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before:
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.05)


def test_executor_cancels_quietly_and_in_one_step(ray):
    import logging
    from nanoray.util.concurrent.futures import RayExecutor
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("concurrent.futures").addHandler(handler)
    try:
        with RayExecutor(max_workers=8) as ex:
            futs = [ex.submit(nap, 0.01) for _ in range(64)]
            cancelled = [f for f in futs[::2] if f.cancel()]
            for f in futs:
                try:
                    f.result(T)
                except cf.CancelledError:
                    assert f in cancelled
            assert all(f.done() for f in futs)
    finally:
        logging.getLogger("concurrent.futures").removeHandler(handler)
    assert [r for r in records if r.levelno >= logging.ERROR] == []


def test_drop_ins_hold_no_result_once_it_is_delivered(ray):
    """The drop-ins' background thread must not keep the last results it
    saw: a result dropped by the user leaves the store at once."""
    from conftest import store_objects
    from nanoray.util.concurrent.futures import RayExecutor
    from nanoray.util.multiprocessing import Pool
    with Pool(2) as p, RayExecutor(max_workers=2) as ex:
        p.map(square, range(4))
        ex.submit(square, 1).result(T)
        time.sleep(0.3)                       # the thread is idle: nothing in flight
        before = store_objects()
        for _ in range(3):
            futures = [ex.submit(square, i) for i in range(4)]
            assert [f.result(T) for f in futures] == [0, 1, 4, 9]
            results = [p.apply_async(square, (i,)) for i in range(4)]
            assert [r.get(T) for r in results] == [0, 1, 4, 9]
            del futures, results
            time.sleep(0.3)                   # past the thread's 0.1 s idle wait
            assert store_objects() == before
