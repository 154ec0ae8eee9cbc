"""Faults and a full store: what a kill -9 costs and what spilling costs.

    python benchmarks/bench_faults.py [--kills 300] [--json out.json]

Figures:
  kill storm      workers SIGKILLed every ~10 ms (half at random, half caught
                  holding the region's lock, stopped there and killed inside
                  the critical section) while rounds of 200 parent tasks
                  (each 4 leaves with array arguments, a nested put and a
                  nested get) run; every result is checked.
                  Reports kills, tasks checked, locks recovered from a dead
                  holder (repairs), sections rolled back, and the rounds'
                  wall time next to the same rounds without kills.
  recovery        a worker is SIGKILLed 20 ms into a 100 ms task that may be
                  retried: time until the retried task's result is back,
                  less the task's own 100 ms (median of 20).
  spilling        2 GiB of 8 MiB arrays put through a 256 MiB store (GB/s),
                  then read back in order (GB/s), next to the same puts into
                  a store that holds them all.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time

import numpy as np

import nanoray as ray
from nanoray._faults import Killer, nested_workload


def kill_storm(target_kills):
    ray.init(num_cpus=2, object_store_memory=256 << 20)
    region = ray._api._backend.region
    parent, expected = nested_workload(ray)
    n = 200
    expect = [expected(i) for i in range(n)]

    def one_round():
        got = ray.get([parent.remote(i) for i in range(n)], timeout=300)
        for i, (total, (inner,)) in enumerate(got):
            assert total == expect[i] and int(ray.get(inner)[0]) == i
        return n * 5

    one_round()
    t0 = time.perf_counter()
    for _ in range(5):
        one_round()
    calm = (time.perf_counter() - t0) / 5

    before = region.verify()
    checked, rounds, t0 = 0, 0, time.perf_counter()
    with Killer(region, every=0.01, seed=1) as killer:
        while killer.kills < target_kills:
            checked += one_round()
            rounds += 1
    stormy = (time.perf_counter() - t0) / rounds
    v, s = region.verify(), region.stats()
    ray.shutdown()
    assert v["code"] == 0
    return dict(kills=killer.kills, in_critical_section=killer.in_section,
                tasks_checked=checked, rounds=rounds,
                repairs=s["lock_repairs"], rollbacks=v["rollbacks"] - before["rollbacks"],
                undo_entries_applied=v["undone"] - before["undone"],
                round_s_calm=round(calm, 4), round_s_storm=round(stormy, 4))


def recovery():
    ray.init(num_cpus=2, object_store_memory=64 << 20)
    region = ray._api._backend.region

    @ray.remote(max_retries=1)
    def work(path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
        time.sleep(0.1)
        return 1

    out = []
    for k in range(20):
        path = "/tmp/nanoray-bench-recovery-%d-%d" % (os.getpid(), k)
        t0 = time.perf_counter()
        ref = work.remote(path)
        while not os.path.exists(path) or not open(path).read():
            time.sleep(0.0005)
        time.sleep(0.02)
        os.kill(int(open(path).read()), signal.SIGKILL)
        t_kill = time.perf_counter()
        ray.get(ref)
        out.append(time.perf_counter() - t_kill - 0.1)
        os.unlink(path)
    ray.shutdown()
    return dict(recovery_ms_median=round(statistics.median(out) * 1e3, 2),
                recovery_ms_max=round(max(out) * 1e3, 2))


def spilling():
    res = {}
    total, each = 2 << 30, 8 << 20
    arr = np.ones(each // 8)
    for label, store in (("fits", total + (512 << 20)), ("spills", 256 << 20)):
        ray.init(num_cpus=1, object_store_memory=store)
        warm = [ray.put(arr) for _ in range(4)]
        del warm
        t0 = time.perf_counter()
        refs = [ray.put(arr) for _ in range(total // each)]
        put = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in refs:
            assert ray.get(r)[0] == 1.0
        get = time.perf_counter() - t0
        s = ray._api._backend.region.stats()
        res[label] = dict(put_GBps=round(total / put / 1e9, 2), get_GBps=round(total / get / 1e9, 2),
                          spills=s["spills"], restores=s["restores"])
        del refs
        ray.shutdown()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--json")
    a = ap.parse_args()
    out = dict(machine="%s, %d CPUs, Python %s" % (platform.platform(), os.cpu_count(),
                                                  sys.version.split()[0]))
    out["kill_storm"] = kill_storm(a.kills)
    print("kill storm:", out["kill_storm"], flush=True)
    out["recovery"] = recovery()
    print("recovery:", out["recovery"], flush=True)
    out["spilling"] = spilling()
    print("spilling:", out["spilling"], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
