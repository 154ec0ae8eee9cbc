"""The cold path: what a fresh runtime does in its first moments.

Each trial is a fresh interpreter (numpy imported first, as a numeric script
does) that starts nanoray and measures, in this order:

  rt_0_100ms        median task round trip (get(f.remote())) in the first
  rt_100_200ms      0.1 s after the first task's result came back (the pool's
  rt_200_300ms      first worker is up; the zygote imports numpy and forks
                    the others), the next 0.1 s, ...: round trips run back to
                    back, each counted in the slot where it started
  rt_*_p90          each slot's 90th percentile and mean
  rt_*_mean
  rt_steady         median round trip 1 s later
  put_first_now     GB/s of the first put of 256 MiB, made right after the
                    first task's result (the store's pages all fresh)
  put_warm          median GB/s of 5 puts of the same array, each ref dropped
  task_fresh_ms     first x + 1 on a fresh 256 MiB array passed by ref, from
                    .remote() until the result's get() (the worker allocates
                    the result and stores it into fresh store memory)
  put_first_idle    (a second fresh interpreter) the first put of 256 MiB
                    0.3 s after init, a typical pause while a script builds
                    its data
  init_ms           init() until the first task's result (the
                    put_first_idle trial's: no round-trip loop before it)

    python benchmarks/bench_cold.py [--rounds 5]
    python benchmarks/bench_cold.py --ab /path/to/base/src /path/to/new/src [--rounds 7]

With --ab, rounds alternate between the two source trees (PYTHONPATH), A
then B, so both see the same machine phases; the table gives medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

MiB = 1 << 20

TRIAL = r"""
import json, statistics, sys, time
import numpy as np
import nanoray as ray

mode = sys.argv[1]
big = np.ones(256 * %(MiB)d // 8)
out = {}

def noop():
    return 0

if mode == "now":
    t0 = time.perf_counter()
    ray.init(num_cpus=2)
    t_init = time.perf_counter()
    f = ray.remote(noop)
    ray.get(f.remote())                   # the first worker is up
    t_first = time.perf_counter()
    samples = []
    while True:
        t = time.perf_counter()
        ray.get(f.remote())
        e = time.perf_counter()
        if t - t_first >= 0.3:
            break
        samples.append((t - t_first, e - t))
    for lo in (0, 100, 200):
        xs = sorted(d for s, d in samples if lo / 1e3 <= s < (lo + 100) / 1e3)
        key = "rt_%%d_%%dms" %% (lo, lo + 100)
        out[key] = statistics.median(xs) * 1e6 if xs else None
        if xs:
            out[key + "_p90"] = xs[int(0.9 * (len(xs) - 1))] * 1e6
            out[key + "_mean"] = statistics.fmean(xs) * 1e6
    t = time.perf_counter()
    r = ray.put(big)
    out["put_first_now"] = big.nbytes / (time.perf_counter() - t) / 1e9
    del r
    warm = []
    for _ in range(5):
        t = time.perf_counter()
        r = ray.put(big)
        warm.append(big.nbytes / (time.perf_counter() - t) / 1e9)
        del r

    @ray.remote
    def inc(x):
        return x + 1
    x = ray.put(big)
    t = time.perf_counter()
    y = ray.get(inc.remote(x))
    out["task_fresh_ms"] = (time.perf_counter() - t) * 1e3
    assert y[0] == 2.0
    del y
    out["put_warm"] = statistics.median(warm)
    time.sleep(1.0)
    rts = []
    for _ in range(300):
        t = time.perf_counter()
        ray.get(f.remote())
        rts.append(time.perf_counter() - t)
    out["rt_steady"] = statistics.median(rts) * 1e6
else:
    t0 = time.perf_counter()
    ray.init(num_cpus=2)
    f = ray.remote(noop)
    ray.get(f.remote())
    out["init_ms"] = (time.perf_counter() - t0) * 1e3
    time.sleep(max(0.0, 0.3 - (time.perf_counter() - t0)))
    t = time.perf_counter()
    r = ray.put(big)
    out["put_first_idle"] = big.nbytes / (time.perf_counter() - t) / 1e9
    del r
ray.shutdown()
print(json.dumps(out))
""" % {"MiB": MiB}

ROWS = (("init_ms", "init until first task", "ms"),
        ("rt_0_100ms", "round trip, first 0.1 s, median", "us"),
        ("rt_0_100ms_p90", "round trip, first 0.1 s, 90th pct", "us"),
        ("rt_0_100ms_mean", "round trip, first 0.1 s, mean", "us"),
        ("rt_100_200ms", "round trip, 0.1-0.2 s, median", "us"),
        ("rt_100_200ms_p90", "round trip, 0.1-0.2 s, 90th pct", "us"),
        ("rt_100_200ms_mean", "round trip, 0.1-0.2 s, mean", "us"),
        ("rt_200_300ms", "round trip, 0.2-0.3 s, median", "us"),
        ("rt_200_300ms_p90", "round trip, 0.2-0.3 s, 90th pct", "us"),
        ("rt_200_300ms_mean", "round trip, 0.2-0.3 s, mean", "us"),
        ("rt_steady", "round trip, steady (1 s later)", "us"),
        ("put_first_now", "first put 256 MiB, right after init", "GB/s"),
        ("put_first_idle", "first put 256 MiB, 0.3 s after init", "GB/s"),
        ("put_warm", "warm put 256 MiB", "GB/s"),
        ("task_fresh_ms", "first x + 1 on a fresh 256 MiB ref", "ms"))


def trial(src):
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    out = {}
    for mode in ("now", "idle"):
        p = subprocess.run([sys.executable, "-c", TRIAL, mode], env=env, capture_output=True,
                           text=True, timeout=300)
        if p.returncode != 0:
            raise SystemExit("trial failed (%s):\n%s" % (src, p.stderr))
        out.update(json.loads(p.stdout.strip().splitlines()[-1]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ab", nargs=2, metavar=("A_SRC", "B_SRC"))
    ap.add_argument("--json", help="write every trial's figures here")
    a = ap.parse_args()
    trees = a.ab or [None]
    results = {t: [] for t in trees}
    for i in range(a.rounds):
        for t in trees:
            results[t].append(trial(t))
            print("round %d %s: %s" % (i + 1, t or "(this tree)", json.dumps(
                {k: round(v, 2) for k, v in results[t][-1].items() if v is not None})),
                file=sys.stderr, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({t or "": r for t, r in results.items()}, f, indent=1)
    head = "%-40s %5s" % ("figure (median of %d)" % a.rounds, "unit")
    for t in trees:
        head += " %12s" % ("A" if a.ab and t == trees[0] else "B" if a.ab else "nanoray")
    print(head)
    for key, name, unit in ROWS:
        line = "%-40s %5s" % (name, unit)
        for t in trees:
            xs = [r[key] for r in results[t] if r.get(key) is not None]
            line += " %12s" % ("%.2f" % statistics.median(xs) if xs else "-")
        print(line)


if __name__ == "__main__":
    main()
