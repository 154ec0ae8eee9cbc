"""The workloads of benchmarks/bench_breakdown.py, each run in a process of
its own (python3 _breakdown_runs.py SCENARIO N): the parent chooses the
build (PYTHONPATH), the trace file (NANORAY_PROF_FILE) or valgrind.

  rt      one no-op task at a time: f.remote(), get, del ref; N round trips
  rt_idle the same with 2 ms between round trips: worker and driver sleep
          in the futex (the cold path: wake-ups cost a context switch)
  pipe    pipelined: N batches of 1000 no-op tasks submitted one by one,
          then one get() of the batch (as the microbenchmark's pipelined row)
  plain_rt / plain_pipe  the same loops without marks, timed with
          perf_counter: for builds that have no nr_prof_mark (the default)
Prints one JSON line of wall-clock figures."""
import json
import os
import sys
import time

import nanoray as ray

from _breakdown_mark import (BATCH_B, BATCH_E, BATCH_SUBMITTED, CAL, GOT, RELEASED, RT_BEGIN,
                             SUBMITTED, cg_dump, cg_zero, mark, noop, noop_marked, pin_to)

BATCH = 1000


def main():
    scenario, n = sys.argv[1], int(sys.argv[2])
    cpus = int(os.environ.get("BD_CPUS", "2"))
    warm = int(os.environ.get("BD_WARM", "300"))
    callgrind = bool(os.environ.get("BD_CALLGRIND"))
    ray.init(num_cpus=cpus)
    out = {"scenario": scenario, "n": n, "cpus": cpus}
    try:
        g = ray.remote(noop)
        if os.environ.get("BD_PIN") and cpus == 1:
            # Driver on CPU 0, the one worker on CPU 1: no two spinners
            # ever share a core (the scheduler may otherwise put them on one).
            ray.get(ray.remote(pin_to).remote(1))
            pin_to(0)
        if scenario in ("rt", "rt_idle", "plain_rt"):
            for _ in range(warm):
                ray.get(g.remote())
            gap = 0.002 if scenario == "rt_idle" else 0.0
            if scenario == "plain_rt":
                ts = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    ray.get(g.remote())
                    ts.append(time.perf_counter() - t0)
                ts.sort()
                out["rt_median_us"] = ts[len(ts) // 2] * 1e6
            else:
                if callgrind:
                    ray.get(ray.remote(cg_zero).remote())
                    mark(1000)
                for i in range(0 if callgrind else 200):
                    mark(CAL, i)
                f = ray.remote(noop_marked)
                ray.get(f.remote())            # exported before the measured loop
                for i in range(n):
                    mark(RT_BEGIN, i)
                    r = f.remote()
                    mark(SUBMITTED, i)
                    ray.get(r)
                    mark(GOT, i)
                    del r
                    mark(RELEASED, i)
                    if gap:
                        time.sleep(gap)
        elif scenario in ("pipe", "plain_pipe"):
            ray.get([g.remote() for _ in range(BATCH)])
            if callgrind:
                ray.get(ray.remote(cg_zero).remote())
                mark(1000)
            rates = []
            for b in range(n):
                if scenario == "pipe":
                    mark(BATCH_B, b)
                t0 = time.perf_counter()
                refs = [g.remote() for _ in range(BATCH)]
                if scenario == "pipe":
                    mark(BATCH_SUBMITTED, b)
                ray.get(refs)
                rates.append(BATCH / (time.perf_counter() - t0))
                if scenario == "pipe":
                    mark(BATCH_E, b)
                del refs
            if scenario == "pipe":
                mark(BATCH_B, n)               # closes the last cycle (its refs released)
            rates.sort()
            out["tasks_per_s_median"] = rates[len(rates) // 2]
            if callgrind:
                mark(1001)
                ray.get(ray.remote(cg_dump).remote())
        else:
            raise SystemExit("unknown scenario " + scenario)
    finally:
        ray.shutdown()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
