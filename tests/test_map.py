"""f.map(*iterables, chunksize=None): batched submission.  One ref per
item, in order, each behaving as the ref of f.remote(*item) would: its
value, its own error, its retries; items passing refs get their values."""

import os
import sys
import threading
import time

import numpy as np
import pytest

from conftest import store_objects
from nanoray import exceptions

T = 60


def square(x):
    return x * x


def fails_on(bad):
    def f(x):
        if x in bad:
            raise ValueError("item %d" % x)
        return x * x
    return f


def test_map_returns_one_ref_per_item_in_order(ray):
    f = ray.remote(square)
    for n, chunk in [(0, None), (1, None), (7, None), (100, 1), (100, 7), (2500, None)]:
        refs = f.map(range(n), chunksize=chunk)
        assert isinstance(refs, list) and len(refs) == n
        assert all(isinstance(r, ray.ObjectRef) for r in refs)
        assert len(set(refs)) == n
        assert ray.get(refs, timeout=T) == [x * x for x in range(n)]


def test_map_zips_its_iterables_like_the_builtin_map(ray):
    add = ray.remote(lambda a, b: a + b)
    assert ray.get(add.map(range(5), [10, 20, 30]), timeout=T) == [10, 21, 32]
    assert ray.get(add.map(iter(range(4)), (x for x in range(4))), timeout=T) == [0, 2, 4, 6]
    assert ray.get(add.options(num_cpus=0.5).map("ab", "cd"), timeout=T) == ["ac", "bd"]


def test_an_item_that_raises_fails_its_own_ref_only(ray):
    f = ray.remote(fails_on({3, 4, 9}))
    refs = f.map(range(12), chunksize=5)
    for i, r in enumerate(refs):
        if i in (3, 4, 9):
            with pytest.raises(exceptions.RayTaskError) as info:
                ray.get(r, timeout=T)
            assert isinstance(info.value, ValueError)           # the cause's type too
            assert "item %d" % i in str(info.value)
        else:
            assert ray.get(r, timeout=T) == i * i


def test_items_passing_refs_get_their_values_and_nested_refs_stay_refs(ray):
    f = ray.remote(lambda x: x * 2 if not isinstance(x, list) else type(x[0]).__name__)
    a, b = ray.put(5), ray.put(np.arange(4.0))
    out = ray.get(f.map([1, a, 3, b, [a]]), timeout=T)
    assert out[:3] == [2, 10, 6]
    np.testing.assert_array_equal(out[3], np.arange(4.0) * 2)
    assert out[4] == "ObjectRef"
    failed = ray.remote(fails_on({0})).remote(0)
    refs = f.map([failed, 1])
    with pytest.raises(exceptions.RayTaskError):                 # the argument's error
        ray.get(refs[0], timeout=T)
    assert ray.get(refs[1], timeout=T) == 2


def test_map_checks_its_arguments_before_submitting_anything(ray):
    f = ray.remote(square)
    with pytest.raises(TypeError):
        f.map()
    with pytest.raises(TypeError, match="square"):
        f.map(range(3), range(3))                   # two arguments for one parameter
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="chunksize"):
            f.map(range(3), chunksize=bad)
    assert ray.get(f.map(range(3), chunksize=np.int64(2)), timeout=T) == [0, 1, 4]
    for n in (2, 0, "streaming", "dynamic"):
        with pytest.raises(ValueError, match="num_returns"):
            f.options(num_returns=n).map(range(3))

    def gen(n):
        yield n
    with pytest.raises(ValueError, match="generator"):
        ray.remote(gen).map(range(3))
    with pytest.raises(TypeError):
        f.map(5)                                    # not iterable


def test_map_passes_large_arguments_and_returns_arrays_exactly(ray):
    f = ray.remote(lambda a, k: a * k)
    arrays = [np.full(300_000, i, dtype=np.float64) for i in range(6)]   # 2.4 MB each
    out = ray.get(f.map(arrays, range(6), chunksize=4), timeout=T)
    for i, v in enumerate(out):
        np.testing.assert_array_equal(v, arrays[i] * i)


def test_retry_exceptions_retries_each_item(ray):
    @ray.remote(retry_exceptions=[KeyError], max_retries=2)
    def flaky(x):
        seen = flaky_seen.setdefault(x, 0)
        flaky_seen[x] = seen + 1
        if seen < 2:                             # fails twice, then works
            raise KeyError(x)
        return x
    assert ray.get(flaky.map(range(10), chunksize=5), timeout=T) == list(range(10))

    @ray.remote(retry_exceptions=[KeyError], max_retries=1)
    def too_flaky(x):
        seen = flaky_seen.setdefault(("t", x), 0)
        flaky_seen[("t", x)] = seen + 1
        raise KeyError(x) if seen < 2 else AssertionError("ran a third time")
    for r in too_flaky.map(range(4), chunksize=4):
        with pytest.raises(KeyError):
            ray.get(r, timeout=T)


flaky_seen = {}


def test_a_chunk_whose_worker_dies_runs_again_and_values_are_exact(ray, tmp_path):
    marker = str(tmp_path / "died")

    @ray.remote(max_retries=2)
    def dies_once(x):
        if x == 17 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return x * 3
    assert ray.get(dies_once.map(range(40), chunksize=10), timeout=T) == [x * 3 for x in range(40)]

    @ray.remote(max_retries=0)
    def always_dies(x):
        if x == 5:
            os._exit(1)
        return x
    refs = always_dies.map(range(20), chunksize=10)
    assert ray.get(refs[10:], timeout=T) == list(range(10, 20))     # the other chunk
    assert ray.get(refs[:5], timeout=T) == list(range(5))           # done before it died
    with pytest.raises(exceptions.WorkerCrashedError):              # as f.remote(5) would
        ray.get(refs[5], timeout=T)
    assert ray.get(refs[6:10], timeout=T) == list(range(6, 10))     # the rest still run


def test_max_retries_is_each_items_own_when_workers_die(ray, tmp_path):
    @ray.remote(max_retries=2)
    def kills_its_worker(x):
        open(str(tmp_path / ("ran%d-%d" % (x, os.getpid()))), "w").close()
        if x in (1, 3):
            os._exit(1)
        return x
    refs = kills_its_worker.map(range(6), chunksize=6)
    for bad in (1, 3):                   # each item had its own 2 retries: 3 runs
        with pytest.raises(exceptions.WorkerCrashedError):
            ray.get(refs[bad], timeout=T)
    assert ray.get([refs[i] for i in (0, 2, 4, 5)], timeout=T) == [0, 2, 4, 5]
    runs = sorted(int(n[3:].split("-")[0]) for n in os.listdir(tmp_path))
    assert runs == [0, 1, 1, 1, 2, 3, 3, 3, 4, 5]


def test_cancelling_a_ref_cancels_its_chunk_and_no_more_items_run(ray, tmp_path):
    started = str(tmp_path / "started")

    @ray.remote
    def slow(x):
        if x == 0:
            open(started, "w").close()
            time.sleep(60)
        open(str(tmp_path / ("ran%d" % x)), "w").close()
        return x
    refs = slow.map(range(6), chunksize=6)
    deadline = time.monotonic() + T
    while not os.path.exists(started) and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    ray.cancel(refs[3])
    for r in refs:
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(r, timeout=T)
    assert time.monotonic() - t0 < 30
    assert not any(n.startswith("ran") for n in os.listdir(tmp_path))
    assert ray.get(ray.remote(square).map([3]), timeout=T) == [9]   # workers still serve


def test_map_from_threads_and_from_inside_a_task(ray):
    f = ray.remote(square)
    results = {}

    def run(k):
        results[k] = ray.get(f.map(range(k, k + 500)), timeout=T)
    threads = [threading.Thread(target=run, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k * 1000] == [x * x for x in range(k * 1000, k * 1000 + 500)]

    @ray.remote
    def outer(n):
        import nanoray
        return sum(nanoray.get(f.map(range(n))))
    assert ray.get(outer.remote(100), timeout=T) == sum(x * x for x in range(100))


def test_dropped_map_results_leave_the_store(ray):
    f = ray.remote(lambda x: np.full(1000, x))
    assert ray.get(f.map([7]), timeout=T)[0][0] == 7      # the function is exported
    before = store_objects()
    for _ in range(3):
        refs = f.map(range(3000))
        got = ray.get(refs, timeout=T)
        assert [int(v[0]) for v in got] == list(range(3000))
        del refs, got
    assert store_objects() == before


def test_each_value_is_taken_when_its_item_returns(ray):
    @ray.remote
    def reuses(x):
        buf = reuses_buf
        buf.clear()
        buf.append(x)                       # the same list object each time
        return buf
    assert ray.get(reuses.map(range(4), chunksize=4), timeout=T) == [[0], [1], [2], [3]]

    @ray.remote
    def gen_obj(x):                         # a plain function returning a generator
        return (v for v in [x * 10])
    assert ray.get(gen_obj.map(range(3)), timeout=T) == [0, 10, 20]


reuses_buf = []


def test_item_retries_follow_f_remote(ray):
    @ray.remote(retry_exceptions=[KeyError], max_retries=-1)         # forever
    def flaky(x):
        seen = flaky_seen.setdefault(("forever", x), 0)
        flaky_seen[("forever", x)] = seen + 1
        if seen < 2:
            raise KeyError(x)
        return x
    assert ray.get(flaky.map(range(3), chunksize=3), timeout=T) == [0, 1, 2]

    @ray.remote(retry_exceptions=[ValueError], max_retries=1)
    def appends(lst):
        lst.append(1)                       # a retry gets its arguments afresh
        if len(lst) == 1:
            raise ValueError("first")
        return len(lst)
    for r in appends.map([[], []]) + [appends.remote([])]:
        with pytest.raises(ValueError):
            ray.get(r, timeout=T)


def test_an_item_raising_keyboard_interrupt_fails_alone(ray):
    @ray.remote
    def f(x):
        if x == 2:
            raise KeyboardInterrupt
        return x
    refs = f.map(range(6), chunksize=6)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(refs[2], timeout=T)
    assert ray.get(refs[:2] + refs[3:], timeout=T) == [0, 1, 3, 4, 5]


class _KillsWhenLoaded:
    """An argument whose unpickling in a worker ends that worker."""

    def __init__(self, log):
        self.log = log

    def __reduce__(self):
        return (_kill_if_worker, (self.log, os.getpid()))


def _kill_if_worker(log, driver):
    if os.getpid() != driver:
        with open(log, "a") as f:
            f.write("x")
        os._exit(3)
    return _KillsWhenLoaded(log)


def test_a_chunk_whose_arguments_kill_the_worker_fails_after_bounded_runs(ray, tmp_path):
    log = str(tmp_path / "loads")

    @ray.remote(max_retries=1)
    def echo(x):
        return 1
    refs = echo.map([1, _KillsWhenLoaded(log), 3], chunksize=3)
    for r in refs:                       # not re-run forever: each item's budget bounds it
        with pytest.raises(exceptions.WorkerCrashedError):
            ray.get(r, timeout=T)
    with open(log) as f:
        assert len(f.read()) <= 3 * (1 + 1) + 1


def test_exception_retries_and_deaths_share_each_items_max_retries(ray, tmp_path):
    # As f.remote: max_retries=1 allows one more attempt, whatever ended the first.
    @ray.remote(max_retries=1, retry_exceptions=True)
    def flaky(x, log):
        with open(log, "a") as f:
            f.write("x")
        with open(log) as f:
            n = len(f.read())
        if n % 2 == 1:
            raise ValueError("attempt %d" % n)
        os._exit(1)
    for chunked in (False, True):
        logs = [str(tmp_path / ("%s-%d" % (chunked, i))) for i in range(2)]
        refs = (flaky.map([0, 1], logs, chunksize=2) if chunked
                else [flaky.remote(i, logs[i]) for i in range(2)])
        for r in refs:
            with pytest.raises(exceptions.WorkerCrashedError):
                ray.get(r, timeout=T)
        for log in logs:
            with open(log) as f:
                assert len(f.read()) == 2, chunked


def test_sys_exit_in_an_item_reruns_the_chunk_from_that_item(ray, tmp_path):
    @ray.remote(max_retries=2)
    def exits_once(x):
        open(str(tmp_path / ("ran%d-%d" % (x, os.getpid()))), "w").close()
        if x == 2 and not os.path.exists(str(tmp_path / "exited")):
            open(str(tmp_path / "exited"), "w").close()
            raise SystemExit(1)
        return x
    assert ray.get(exits_once.map(range(5), chunksize=5), timeout=T) == list(range(5))
    runs = [n for n in os.listdir(tmp_path) if n.startswith("ran")]
    assert sorted(int(n[3:].split("-")[0]) for n in runs) == [0, 1, 2, 2, 3, 4]

    @ray.remote(max_retries=0)
    def exits(x):
        if x == 2:
            sys.exit(1)
        return x
    refs = exits.map(range(5), chunksize=5)
    assert ray.get(refs[:2], timeout=T) == [0, 1]
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(refs[2], timeout=T)
    assert ray.get(refs[3:], timeout=T) == [3, 4]                   # its own failure only


def test_a_chunk_too_big_for_the_store_goes_in_parts(fresh):
    ray = fresh(num_cpus=2, object_store_memory=64 << 20)
    f = ray.remote(lambda a: float(a[0]))
    arrays = [np.full(1 << 17, i, dtype=np.float64) for i in range(100)]   # 1 MiB each
    assert ray.get(f.map(arrays, chunksize=100), timeout=T) == [float(i) for i in range(100)]


def test_removing_the_placement_group_fails_every_queued_item(fresh):
    from nanoray.util.placement_group import placement_group, remove_placement_group
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    ray = fresh(num_cpus=2)
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready(), timeout=T)
    s = PlacementGroupSchedulingStrategy(pg)

    @ray.remote(num_cpus=1)
    def hold(x):
        time.sleep(0.5 if x == 0 else 0)
        return x
    refs = hold.options(scheduling_strategy=s).map(range(300), chunksize=100)
    time.sleep(0.1)                          # the first chunk runs, two wait
    remove_placement_group(pg)
    done = failed = 0
    for r in refs:
        try:
            ray.get(r, timeout=20)
            done += 1
        except exceptions.TaskPlacementGroupRemoved:       # not a timeout: none hangs
            failed += 1
    assert done + failed == 300 and failed >= 200
