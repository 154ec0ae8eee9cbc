"""A process that dies gives back what it held: the ledger in the region."""

import os
import signal
import time

import numpy as np

from conftest import store_objects, wait_gone


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in %.0f s" % timeout
        time.sleep(0.02)


def test_a_killed_worker_releases_the_refs_and_views_it_held(fresh):
    ray = fresh(num_cpus=2, object_store_memory=256 << 20)
    baseline = store_objects()

    @ray.remote(max_retries=0)
    def hold(box, arr):
        held = ray.get(box[0])                     # a pinned view of a 32 MiB array
        inner = ray.put(np.ones(1 << 20))          # a ref this worker made
        os.kill(os.getpid(), signal.SIGKILL)
        return held, inner
    big = ray.put(np.ones(4 << 20))                # 32 MiB, read in place by the task
    ref = hold.remote([big], np.zeros(10))
    try:
        ray.get(ref, timeout=10)
    except ray.exceptions.WorkerCrashedError:
        pass
    del ref, big
    # Only the exported function stays: the dead worker's pins and refs are back.
    _wait_for(lambda: store_objects() <= baseline + 1)
    used = ray._api._backend.region.stats()["store_used"]
    assert used < 1 << 20, "%d bytes still used after the worker died" % used


def test_seven_crashed_tasks_with_large_arguments_do_not_fill_the_store(fresh):
    ray = fresh(num_cpus=2, object_store_memory=256 << 20)

    @ray.remote(max_retries=0)
    def crash(a):
        view = a                                    # the argument is pinned while it runs
        os._exit(3)
    for _ in range(7):
        ref = crash.remote(np.ones(4 << 20))        # 32 MiB each, put implicitly
        try:
            ray.get(ref, timeout=10)
        except ray.exceptions.WorkerCrashedError:
            pass
        del ref
    _wait_for(lambda: ray._api._backend.region.stats()["store_used"] < 1 << 20)
    ref = ray.put(np.ones(24 << 20))                # 192 MiB still fits
    assert ray.get(ref)[0] == 1.0


def test_an_actor_killed_while_holding_handles_releases_them(fresh):
    ray = fresh(num_cpus=2)

    @ray.remote
    class Box:
        def __init__(self, items):
            self.items = items

        def pid(self):
            return os.getpid()

    @ray.remote
    class Leaf:
        def pid(self):
            return os.getpid()
    leaf = Leaf.remote()
    leaf_pid = ray.get(leaf.pid.remote(), timeout=10)
    box = Box.remote([leaf, ray.put(np.ones(1 << 20))])
    box_pid = ray.get(box.pid.remote(), timeout=10)
    del leaf
    time.sleep(0.2)
    assert wait_gone([leaf_pid], timeout=0) == [leaf_pid], "collected while the box holds it"
    os.kill(box_pid, signal.SIGKILL)
    assert wait_gone([box_pid, leaf_pid]) == [], "the dead box's handle was never released"
