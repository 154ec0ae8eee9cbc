"""Nested tasks: children of tasks blocked in get() run first, and a task
that can never fit is refused wherever it is submitted."""

import pytest


def test_a_wide_nested_fan_out_completes_within_the_worker_limit(ray):
    @ray.remote
    def child(i, j):
        return i * 10 + j

    @ray.remote
    def parent(i):
        return sum(ray.get([child.remote(i, j) for j in range(10)]))
    out = ray.get([parent.remote(i) for i in range(200)], timeout=60)
    assert out == [sum(i * 10 + j for j in range(10)) for i in range(200)]
    # Children ran ahead of new parents: few extra processes were needed.
    assert ray._api._backend.region.stats()["workers"] <= 2 + 16


def test_three_levels_of_nesting(ray):
    @ray.remote
    def leaf(x):
        return x

    @ray.remote
    def mid(x):
        return sum(ray.get([leaf.remote(x) for _ in range(5)]))

    @ray.remote
    def top(x):
        return sum(ray.get([mid.remote(x) for _ in range(5)]))
    assert ray.get([top.remote(i) for i in range(30)], timeout=60) == [25 * i for i in range(30)]


def test_a_nested_task_needing_more_cpus_than_exist_stays_pending_and_blocks_nothing(ray):
    @ray.remote(num_cpus=3)
    def too_big():
        return 1

    @ray.remote
    def submit_too_big():
        ref = too_big.remote()                     # infeasible: pending, as in Ray
        return ray.wait([ref], timeout=0.3)[0] == []

    @ray.remote
    def fine(x):
        return x + 1
    assert ray.get(submit_too_big.remote(), timeout=10) is True
    with pytest.warns(RuntimeWarning, match="cannot be scheduled"):
        pending = too_big.options(num_cpus=3.5).remote()
    assert ray.get([fine.remote(i) for i in range(20)], timeout=10) == list(range(1, 21))
    assert ray.wait([pending], timeout=0.2)[0] == []
    ray.cancel(pending)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(pending, timeout=10)


def test_a_stream_of_nested_work_does_not_starve_top_level_tasks(ray):
    import time

    @ray.remote
    def work(d):
        time.sleep(d)
        return 1

    @ray.remote
    class Producer:
        def run(self, secs):                        # keeps 8 nested tasks in flight
            end = time.time() + secs
            inflight, n = [], 0
            while time.time() < end:
                while len(inflight) < 8:
                    inflight.append(work.remote(0.01))
                    n += 1
                _, inflight = ray.wait(inflight, num_returns=1, timeout=10)
            ray.get(inflight, timeout=10)
            return n
    p = Producer.remote()
    r = p.run.remote(3)
    time.sleep(0.5)
    t0 = time.monotonic()
    assert ray.get(work.remote(0), timeout=10) == 1
    assert time.monotonic() - t0 < 1.0, "a top-level task waited for the nested stream to end"
    assert ray.get(r, timeout=20) > 0


def test_waiting_on_futures_in_any_way_lends_the_cpu(fresh):
    import concurrent.futures
    ray = fresh(num_cpus=1)

    @ray.remote
    def child():
        return 1

    @ray.remote
    def parent(how):
        futs = [child.remote().future()]
        if how == "wait":
            done, _ = concurrent.futures.wait(futs, timeout=20)
            return len(done)
        return sum(f.result() for f in concurrent.futures.as_completed(futs, timeout=20))
    assert ray.get(parent.remote("wait"), timeout=30) == 1
    assert ray.get(parent.remote("as_completed"), timeout=30) == 1
