"""Kill -9 at random: workers die at any instruction, inside critical
sections too, while every result is checked exactly.  Afterwards the region
verifies (nr_region_verify: every table, queue and counter agrees with the
others) and the store is back to its baseline once the refs are dropped.

The deterministic counterpart, a death at every crash point of every
critical section, is tests/test_crash_points.py."""

import os
import signal
import time

import numpy as np

from conftest import store_objects
from nanoray._faults import Killer, nested_workload


def _settled(ray, timeout=20.0):
    """The store once quiet, with no worker caches in it: every worker is
    killed (the pool starts fresh ones) and its ledger given back, so what
    remains is what the driver holds.  Returns (object ids, bytes used)."""
    region = ray._api._backend.region
    old = set(region.worker_pids())
    for pid in old:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while old & set(region.worker_pids()):
        assert time.monotonic() < deadline, "killed workers were never reaped"
        time.sleep(0.01)
    store_objects()                                    # gc, and no task in flight
    return {o["id"] for o in region.objects()}, region.stats()["store_used"]


def _assert_back_to(ray, baseline, leaks_allowed=0, timeout=20.0):
    """The store holds what it held at `baseline`, but for at most
    `leaks_allowed` objects leaked by kills that landed in the one
    instruction between a count and its undo-log entry (csrc/nr_undo.h):
    such an object has no holder left, and nothing was freed early."""
    region = ray._api._backend.region
    deadline = time.monotonic() + timeout
    while True:
        ids, used = _settled(ray)
        if (ids <= baseline[0] and used <= baseline[1]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    left = [o for o in region.objects() if o["id"] not in baseline[0]]
    assert len(left) <= leaks_allowed, "objects left: %s" % left
    assert all(not o["holders"] and o["refs"] == 1 and o["state"] == "ready" for o in left), left
    # (a small object holds a block of 192, or 256 when it reused one: nr_arena.c)
    leaked_bytes = sum(max(256, (o["size"] + 64 + 63) // 64 * 64) for o in left)
    assert used <= baseline[1] + leaked_bytes, "%d bytes used (baseline %d)" % (used, baseline[1])
    v = region.verify()
    assert v["code"] == 0 and v["orphan_blocks"] == 0 and v["zero_count_objects"] == 0, v
    return len(left)


def test_random_worker_kills_leave_every_result_exact_and_the_store_clean(fresh):
    ray = fresh(num_cpus=2, object_store_memory=256 << 20)
    region = ray._api._backend.region
    parent, expected = nested_workload(ray)            # nested refs, nested gets
    ray.get(parent.remote(0))                          # functions exported, workers up
    baseline = _settled(ray)
    n, rounds, checked = 200, 0, 0
    expect = {i: expected(i) for i in range(n)}
    deadline = time.monotonic() + 60
    with Killer(region, every=0.01, seed=7, progress=2) as killer:
        while (killer.kills < 150 or killer.in_section < 10) and time.monotonic() < deadline:
            refs = [parent.remote(i) for i in range(n)]
            got = ray.get(refs, timeout=120)
            for i, (total, (inner,)) in enumerate(got):
                assert total == expect[i], (rounds, i, total, expect[i])
                assert (ray.get(inner, timeout=30) == i).all()
            rounds += 1
            checked += n * 5
    assert killer.kills >= 150, "only %d kills landed in %d rounds" % (killer.kills, rounds)
    assert killer.in_section >= 3, "only %d kills inside critical sections" % killer.in_section
    assert region.stats()["lock_repairs"] >= 2         # locks taken over from the dead
    v = region.verify()
    assert v["code"] == 0, v
    assert v["broken"] == 0
    del refs, got, inner
    _assert_back_to(ray, baseline, leaks_allowed=max(3, killer.in_section // 5))
    assert region.arena_check() == 0


def test_a_task_putting_in_a_loop_killed_again_and_again_never_corrupts_the_store(fresh):
    ray = fresh(num_cpus=2, object_store_memory=256 << 20)
    region = ray._api._backend.region

    @ray.remote(max_retries=0)
    def churn(seconds):
        end = time.monotonic() + seconds
        keep = []
        while time.monotonic() < end:                  # allocating and freeing as fast as it can
            keep.append(ray.put(np.ones(1 + len(keep) % 5000)))
            if len(keep) > 50:
                del keep[:25]
        return len(keep)

    ray.get(churn.remote(0.01))                        # exported
    baseline = _settled(ray)
    kills = 0
    for k in range(40):
        ref = churn.remote(5.0)
        time.sleep(0.02 + (k % 7) * 0.011)             # somewhere inside the loop
        for pid in region.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        try:
            ray.get(ref, timeout=30)
        except ray.exceptions.WorkerCrashedError:
            pass
        del ref
        assert region.arena_check() == 0, "store corrupted after kill %d" % k
    assert kills >= 40
    v = region.verify()
    assert v["code"] == 0 and v["broken"] == 0, v
    _assert_back_to(ray, baseline, leaks_allowed=3)   # killed at random points: see _assert_back_to
    ref = ray.put(np.ones(24 << 20))                   # 192 MiB of the 256 still fits
    assert ray.get(ref)[0] == 1.0


def test_workers_killed_while_the_store_spills_and_restores_lose_nothing(fresh):
    """A store a quarter the size of the data: every round spills and
    restores, while workers die at random, inside spills and restores too."""
    ray = fresh(num_cpus=2, object_store_memory=24 << 20)
    region = ray._api._backend.region

    @ray.remote(max_retries=-1)
    def make(i):
        return np.full(1 << 17, i, dtype=np.int64)         # 1 MiB

    @ray.remote(max_retries=-1)
    def check(i, a):
        return int(a[0]) == i and int(a[-1]) == i

    assert ray.get(check.remote(0, make.remote(0)))   # exported
    baseline = _settled(ray)
    deadline = time.monotonic() + 60
    with Killer(region, every=0.02, seed=11, progress=2) as killer:
        while killer.kills < 60 and time.monotonic() < deadline:
            made = [make.remote(i) for i in range(96)]      # 96 MiB through 24
            assert all(ray.get([check.remote(i, m) for i, m in enumerate(made)], timeout=120))
            assert [int(ray.get(m)[7]) for m in made] == list(range(96))
            del made
    assert killer.kills >= 60, killer.kills
    s = region.stats()
    assert s["spills"] > 100 and s["restores"] > 100, s
    v = region.verify()
    assert v["code"] == 0 and v["broken"] == 0, v
    _assert_back_to(ray, baseline, leaks_allowed=max(3, killer.in_section // 5))
