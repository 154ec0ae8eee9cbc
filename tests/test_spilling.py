"""A full store spills: sealed objects nothing has mapped go to files and
come back, transparently, on get and as task arguments."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import nanoray._core._runtime as rt
from conftest import wait_gone

MiB = 1 << 20


def _stats(ray):
    return ray._api._backend.region.stats()


def _spill_dir(ray):
    return rt.spill_dir(ray._api._backend.region)


def test_a_small_object_after_a_freed_big_one_is_spilled_to_make_room(fresh):
    ray = fresh(num_cpus=2, object_store_memory=64 * MiB)
    big = ray.put(np.ones(48 * MiB // 8))
    small = ray.put(np.arange(128))                  # sits after the big one
    del big                                          # 75% of the store free, in one span...
    bigger = ray.put(np.zeros(56 * MiB // 8))        # ...that the small object cuts short
    assert _stats(ray)["spills"] >= 1
    assert (ray.get(small) == np.arange(128)).all()  # read back from its file
    assert ray.get(bigger).nbytes == 56 * MiB
    assert ray._api._backend.region.verify()["code"] == 0


def test_more_data_than_the_store_holds_round_trips_through_get_and_tasks(fresh, tmp_path):
    ray = fresh(num_cpus=2, object_store_memory=64 * MiB,
                object_spilling_directory=str(tmp_path))

    @ray.remote
    def head_and_sum(a):
        return int(a[0]), float(a.sum())

    refs = [ray.put(np.full(MiB, i, dtype=np.int64)) for i in range(24)]   # 192 MiB
    assert _stats(ray)["spilled_objects"] > 0
    spill_dir = _spill_dir(ray)
    assert os.path.dirname(spill_dir) == str(tmp_path)
    assert len(os.listdir(spill_dir)) == _stats(ray)["spilled_objects"]
    assert [int(ray.get(r)[0]) for r in refs] == list(range(24))
    got = ray.get([head_and_sum.remote(r) for r in refs])
    assert got == [(i, float(i * MiB)) for i in range(24)]
    s = _stats(ray)
    assert s["restores"] > 0 and s["spills"] > s["spilled_objects"]
    del refs
    deadline = time.monotonic() + 10
    while _stats(ray)["spilled_objects"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _stats(ray)["spilled_objects"] == 0
    assert os.listdir(spill_dir) == []                # files of freed objects are removed
    ray.shutdown()
    assert not os.path.exists(spill_dir)


def test_a_worker_spills_and_restores_too(fresh):
    ray = fresh(num_cpus=2, object_store_memory=64 * MiB)

    @ray.remote
    def churn(n):
        refs = [ray.put(np.full(MiB, i, dtype=np.int64)) for i in range(n)]
        return [int(ray.get(r)[-1]) for r in refs]

    assert ray.get(churn.remote(20)) == list(range(20))
    assert _stats(ray)["spills"] > 0


def test_views_that_are_alive_are_never_spilled_and_a_store_of_them_is_full(fresh):
    ray = fresh(num_cpus=2, object_store_memory=64 * MiB)
    views = [ray.get(ray.put(np.full(MiB, i, dtype=np.int64))) for i in range(6)]   # 48 MiB held
    with pytest.raises(ray.exceptions.ObjectStoreFullError) as e:
        ray.put(np.zeros(3 * MiB))                   # 24 MiB: only 16 can be freed... none can
    msg = str(e.value)
    requested = int(re.search(r"(\d+) bytes requested", msg).group(1))
    free = int(re.search(r"(\d+) free at most", msg).group(1))
    assert requested >= 24 * MiB > free and "object_store_memory=67108864" in msg
    assert [int(v[0]) for v in views] == list(range(6))   # untouched
    del views
    ref = ray.put(np.zeros(3 * MiB))                 # the views are gone: it fits now
    assert ray.get(ref).nbytes == 24 * MiB


def test_values_holding_refs_stay_in_memory_and_keep_their_refs(fresh):
    ray = fresh(num_cpus=2, object_store_memory=64 * MiB)
    inner = [ray.put(np.full(MiB // 4, i)) for i in range(4)]
    outer = ray.put(inner)                            # a value with refs inside
    del inner
    filler = [ray.put(np.ones(MiB)) for _ in range(12)]   # 96 MiB through the store
    assert [int(ray.get(r)[0]) for r in ray.get(outer)] == [0, 1, 2, 3]
    del filler, outer
    assert ray._api._backend.region.verify()["code"] == 0


def test_the_spilling_directory_from_rays_system_config(fresh, tmp_path):
    import json
    ray = fresh(num_cpus=1, object_store_memory=16 * MiB, _system_config={
        "object_spilling_config": json.dumps(
            {"type": "filesystem", "params": {"directory_path": str(tmp_path)}})})
    refs = [ray.put(np.ones(MiB // 2)) for _ in range(6)]   # 24 MiB
    assert os.path.dirname(_spill_dir(ray)) == str(tmp_path)
    assert os.listdir(_spill_dir(ray))
    del refs
    with pytest.raises(ValueError, match="filesystem"):
        ray.shutdown()
        ray.init(num_cpus=1, _system_config={"object_spilling_config": json.dumps(
            {"type": "smart_open", "params": {"uri": "s3://bucket"}})})


DRIVER = textwrap.dedent("""
    import sys, numpy as np, nanoray as ray
    ray.init(num_cpus=2, object_store_memory=32 << 20, object_spilling_directory=sys.argv[1])
    import nanoray._core._runtime as rt

    @ray.remote
    def churn():                                                # workers spill too
        keep = []
        while True:
            keep.append(ray.put(np.ones(1 << 18)))
            del keep[:-12]
    keep = [ray.put(np.ones(1 << 20)) for _ in range(8)]       # 64 MiB: half spilled
    busy = [churn.remote() for _ in range(2)]
    print(rt.spill_dir(ray._api._backend.region), *ray._api._backend.region.worker_pids(),
          flush=True)
    while True:                                                 # putting until killed
        keep.append(ray.put(np.ones(1 << 19)))
        del keep[0]
""")


def test_a_driver_killed_mid_put_leaves_no_spill_files_and_no_processes(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    spill_base = tmp_path / "spill"
    spill_base.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(spill_base)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    spill_dir, pids = line[0], [int(p) for p in line[1:]]
    assert os.listdir(spill_dir)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_gone(pids, timeout=10) == []
    deadline = time.monotonic() + 10
    while os.path.exists(spill_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(spill_dir), "spill files outlived a SIGKILLed driver"


def test_readers_in_many_processes_restore_and_respill_the_same_objects(fresh):
    """Workers and the driver read the same spilled objects at once, in a
    store too small to hold them all: restores race, objects go back out
    and come back again, and no file is ever lost."""
    ray = fresh(num_cpus=3, object_store_memory=32 * MiB)

    @ray.remote
    def read_all(refs, rounds):
        out = 0
        for _ in range(rounds):
            for i, r in enumerate(refs):
                out += int(ray.get(r)[i % 7] == i)
        return out

    refs = [ray.put(np.full(6 * MiB // 8, i, dtype=np.int64)) for i in range(8)]   # 48 MiB
    pending = [read_all.remote(refs, 3) for _ in range(3)]
    mine = sum(int(ray.get(r)[0] == i) for _ in range(3) for i, r in enumerate(refs))
    assert ray.get(pending, timeout=120) == [24, 24, 24] and mine == 24
    s = _stats(ray)
    assert s["restores"] > 8 and len(os.listdir(_spill_dir(ray))) == s["spilled_objects"]
    assert ray._api._backend.region.verify()["code"] == 0


def test_threads_that_find_the_store_full_each_get_room(fresh):
    import threading
    ray = fresh(num_cpus=1, object_store_memory=64 * MiB)
    errors, kept = [], []

    def putter(k):
        try:
            for i in range(30):
                kept.append(ray.put(np.full(MiB // 2, k)))       # 4 MiB each
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=putter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(int(ray.get(r)[0]) for r in kept) == sorted(k for k in range(4) for _ in range(30))


def test_an_actors_death_error_survives_a_full_store(fresh):
    ray = fresh(num_cpus=2, object_store_memory=32 * MiB)

    @ray.remote
    class A:
        def pid(self):
            return os.getpid()

    a = A.remote()
    pid = ray.get(a.pid.remote())
    filler = [ray.put(np.ones(MiB)) for _ in range(6)]          # 48 MiB: spilling
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(a.pid.remote(), timeout=30)
    del filler


def test_a_spilling_directory_that_is_not_utf8(fresh, tmp_path):
    odd = os.path.join(os.fsencode(str(tmp_path)), b"sp\xffill")
    os.mkdir(odd)
    ray = fresh(num_cpus=1, object_store_memory=16 * MiB, object_spilling_directory=odd)
    refs = [ray.put(np.full(MiB // 4, i)) for i in range(8)]    # 16 MiB
    assert [int(ray.get(r)[0]) for r in refs] == list(range(8))
    assert _stats(ray)["spills"] > 0
