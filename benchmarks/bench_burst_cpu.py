"""Pipelined no-op bursts, each with the CPU the driver and the workers
spent per task: shows whether a slow burst ran more instructions or the
same ones on a slower machine (the spread of the unbatched rate on a
shared VM, BENCHMARKS.md "Why the unbatched rate is not steady here").

    python benchmarks/bench_burst_cpu.py [--rounds 6] [--bursts 5] [--num-cpus 2]

Each round: --bursts bursts of 20,000 `noop.remote()` collected with one
get(); printed: the rate, and CPU per task of the driver
(time.process_time) and of the pool workers (/proc/PID/stat, 10 ms
ticks, so rounds of 100,000 tasks are about right)."""

import argparse
import os
import time

import nanoray as ray

N = 20000


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@ray.remote
def noop():
    return None


@ray.remote
def pid():
    time.sleep(0.3)                     # held, so each worker answers once
    return os.getpid()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--num-cpus", type=int, default=2)
    a = ap.parse_args()
    ray.init(num_cpus=a.num_cpus)
    try:
        workers = sorted(set(ray.get([pid.remote() for _ in range(a.num_cpus)])))
        ray.get([noop.remote() for _ in range(2000)])
        for _ in range(a.rounds):
            w0 = sum(cpu_s(p) for p in workers)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(a.bursts):
                ray.get([noop.remote() for _ in range(N)])
            t1, c1 = time.perf_counter(), time.process_time()
            w1 = sum(cpu_s(p) for p in workers)
            n = N * a.bursts
            print("%8d tasks/s   driver %.2f us/task   workers %.2f us/task"
                  % (n / (t1 - t0), (c1 - c0) / n * 1e6, (w1 - w0) / n * 1e6), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
