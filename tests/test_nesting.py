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


def test_a_nested_task_needing_more_cpus_than_exist_is_refused_and_blocks_nothing(ray):
    @ray.remote(num_cpus=3)
    def too_big():
        return 1

    @ray.remote
    def submit_too_big():
        try:
            too_big.remote()
        except ValueError as e:
            return str(e)
        return "accepted"

    @ray.remote
    def fine(x):
        return x + 1
    msg = ray.get(submit_too_big.remote(), timeout=10)
    assert "needs 3 CPUs" in msg
    assert ray.get([fine.remote(i) for i in range(20)], timeout=10) == list(range(1, 21))
    with pytest.raises(ValueError, match="needs 3 CPUs"):
        too_big.remote()
