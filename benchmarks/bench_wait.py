"""wait() and reaping: what other threads' waits and a dead worker's
arrays cost, two source trees interleaved (an A/B on a noisy machine).

Each figure comes from a fresh interpreter and runtime (num_cpus=2):

- herd: 20 threads each wait() on a 3 s task of its own (num_cpus=0),
  while the main thread loops wait([noop.remote()]) for 2 s.  The idle
  threads' CPU (from /proc/thread-self/stat) and the loop's rate.
- big wait: wait(refs, num_returns=n) on n = 20,000 tasks of 0.3 ms
  (f.map, one per task), then get() of another 20,000 the same way: wall
  time and the driver's CPU for each.
- reap: an actor holding 600 arrays of 1 MiB born in the store, beside
  100,000 small objects, is SIGKILLed; the time until a small put() goes
  through (the zygote's reap holds the lock while it gives the arrays back).

    python benchmarks/bench_wait.py OLD/src NEW/src [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERD = r"""
import json, os, threading, time
import nanoray as ray
ray.init(num_cpus=2)
@ray.remote
def sleeper(t):
    time.sleep(t)
@ray.remote
def noop(i):
    return i
def thread_cpu():
    f = open("/proc/thread-self/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
ray.get(noop.remote(0))
cpu = {}
def idle(k):
    r = sleeper.options(num_cpus=0).remote(3)
    c = thread_cpu()
    ray.wait([r], timeout=30)
    cpu[k] = thread_cpu() - c
ts = [threading.Thread(target=idle, args=(k,)) for k in range(20)]
for t in ts:
    t.start()
time.sleep(0.3)
t0, n = time.monotonic(), 0
while time.monotonic() - t0 < 2:
    ray.wait([noop.remote(n)], timeout=30)
    n += 1
rate = n / (time.monotonic() - t0)
for t in ts:
    t.join()
print(json.dumps({"idle_cpu_s": sum(cpu.values()), "loop_per_s": rate}))
ray.shutdown()
"""

BIG = r"""
import json, resource, time
import nanoray as ray
ray.init(num_cpus=2)
@ray.remote
def f(x):
    t = time.perf_counter()
    while time.perf_counter() - t < 0.0003:
        pass
    return x
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
ray.get(f.map(range(200), chunksize=1))
out = {}
n = 20000
for mode in ("wait", "get"):
    t0, c0 = time.monotonic(), cpu()
    refs = f.map(range(n), chunksize=1)
    if mode == "wait":
        ready, _ = ray.wait(refs, num_returns=n)
        assert len(ready) == n
    else:
        ray.get(refs)
    out[mode + "_wall_s"] = time.monotonic() - t0
    out[mode + "_cpu_s"] = cpu() - c0
    del refs
print(json.dumps(out))
ray.shutdown()
"""

REAP = r"""
import json, os, signal, time
import numpy as np
import nanoray as ray
ray.init(num_cpus=1, object_store_memory=2 << 30)
small = [ray.put(i) for i in range(100000)]
@ray.remote
class Holder:
    def __init__(self):
        self.keep = [np.ones((1 << 20) // 8 + 1) for _ in range(600)]
    def pid(self):
        return os.getpid()
h = Holder.remote()
pid = ray.get(h.pid.remote())
os.kill(pid, signal.SIGKILL)
time.sleep(0.05)
t0 = time.monotonic()
ray.get(ray.put(b"x" * 10))
print(json.dumps({"put_after_kill_ms": (time.monotonic() - t0) * 1000}))
ray.shutdown()
"""


def run(src, script):
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    figures = {t: {} for t in a.trees}
    for _ in range(a.rounds):
        for script in (HERD, BIG, REAP):
            for tree in a.trees:                     # interleaved
                for k, v in run(tree, script).items():
                    figures[tree].setdefault(k, []).append(v)
    keys = list(figures[a.trees[0]])
    print("| figure (median of %d) | %s | %s |" % (a.rounds, *a.trees))
    print("|---|---:|---:|")
    for k in keys:
        print("| %s | %.3g | %.3g |" % (k, statistics.median(figures[a.trees[0]][k]),
                                        statistics.median(figures[a.trees[1]][k])))


if __name__ == "__main__":
    main()
