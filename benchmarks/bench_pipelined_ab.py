"""Pipelined no-op tasks/s, two source trees interleaved (an A/B of code on
a noisy machine: both trees see the same phases).

Each run is a fresh interpreter and runtime (num_cpus=2): 2,000 tasks to
warm up, then the best of 5 bursts of 20,000 tasks, each burst submitted
in a loop of f.remote() and then collected with one get().

    python benchmarks/bench_pipelined_ab.py OLD/src NEW/src [--pairs 8]

The last column is the machine's own speed just before each pair: the
milliseconds a pure-Python loop of 2M additions took (the best of 3).  On
the shared development VM it moves by up to 1.7x within seconds, with no
steal time reported, and the rates move with it.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

RUN = r"""
import time, nanoray as ray
ray.init(num_cpus=2)
@ray.remote
def noop():
    return None
ray.get([noop.remote() for _ in range(2000)])
best = 0
for _ in range(5):
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(20000)])
    best = max(best, 20000 / (time.perf_counter() - t0))
print(int(best))
ray.shutdown()
"""


def loop_ms():
    """The machine's speed now: a pure-Python loop, best of 3 (ms)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        s = 0
        for i in range(2_000_000):
            s += i
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def one(src):
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return int(out.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--pairs", type=int, default=8)
    a = ap.parse_args()
    rows = []
    for _ in range(a.pairs):
        speed = loop_ms()
        rows.append((one(a.old), one(a.new)))
        print("%10d %10d %8.0f ms" % (rows[-1] + (speed,)), flush=True)
    print("median tasks/s: old %d, new %d" % (statistics.median(r[0] for r in rows),
                                             statistics.median(r[1] for r in rows)))


if __name__ == "__main__":
    main()
