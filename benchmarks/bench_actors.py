"""Actors at rest and at birth: how long creating one takes (Cls.remote()
until its first call's result is back), and what 100 idle actors cost —
resident and proportional memory per actor process (from
/proc/PID/smaps_rollup) and the CPU time they use while idle.  The driver
imports numpy first, as a numeric script does, so actor processes carry it.

    python benchmarks/bench_actors.py [--actors 100] [--idle-seconds 2]
"""

import argparse
import os
import statistics
import time

import numpy as np  # noqa: F401 (what a numeric script has loaded)

import nanoray as ray


class Idle:
    def pid(self):
        return os.getpid()


def _rollup(pid):
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                out[parts[0][:-1]] = int(parts[1]) / 1024.0
    return out


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actors", type=int, default=100)
    ap.add_argument("--idle-seconds", type=float, default=2.0)
    a = ap.parse_args()
    ray.init(num_cpus=2)
    RIdle = ray.remote(Idle)
    first = RIdle.remote()
    ray.get(first.pid.remote())
    ray.kill(first)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        h = RIdle.remote()
        ray.get(h.pid.remote())
        times.append(time.perf_counter() - t)
        ray.kill(h)
    t = time.perf_counter()
    actors = [RIdle.remote() for _ in range(a.actors)]
    pids = ray.get([h.pid.remote() for h in actors], timeout=120)
    batch = time.perf_counter() - t
    time.sleep(0.5)                                 # let every actor go to sleep
    cpu0 = sum(_cpu_seconds(p) for p in pids)
    time.sleep(a.idle_seconds)
    cpu1 = sum(_cpu_seconds(p) for p in pids)
    mem = [_rollup(p) for p in pids]
    print("actor creation until first result: median %.2f ms, best %.2f ms (20 one by one)"
          % (statistics.median(times) * 1e3, min(times) * 1e3))
    print("%d actors created together: %.1f ms in all, %.2f ms each"
          % (a.actors, batch * 1e3, batch / a.actors * 1e3))
    print("idle: %.3f CPU-seconds used by all %d actors in %.1f s"
          % (cpu1 - cpu0, a.actors, a.idle_seconds))
    print("memory per idle actor: RSS median %.1f MiB (max %.1f), PSS median %.1f MiB"
          % (statistics.median(m["Rss"] for m in mem), max(m["Rss"] for m in mem),
             statistics.median(m["Pss"] for m in mem)))
    ray.shutdown()


if __name__ == "__main__":
    main()
