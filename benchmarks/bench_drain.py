"""How fast the workers alone take no-op tasks from a full queue, with 1
and with 2 workers: the part of the unbatched pipelined rate that does not
depend on the driver (BENCHMARKS.md, "What bounds the unbatched rate").

Each round: the workers are held by one sleeping task each while the
driver queues --n no-op tasks; then the sleepers end and the driver only
sleeps (a 5 ms poll), so the workers drain the queue alone.  Printed: the
driver's CPU per submit (nothing taken meanwhile), the drain's rate, and
the workers' CPU per task (/proc/PID/stat, 10 ms ticks: rounds of
100,000 tasks are about right).

    python benchmarks/bench_drain.py [--workers 1 2] [--rounds 4] [--n 100000]
"""

import argparse
import os
import statistics
import subprocess
import sys

RUN = r"""
import os, sys, time, nanoray as ray
workers, rounds, n = map(int, sys.argv[1:4])
ray.init(num_cpus=workers)

@ray.remote
def noop():
    return None

@ray.remote
def nap(s):
    time.sleep(s)

@ray.remote
def pid():
    time.sleep(0.2)
    return os.getpid()

def cpu_s(p):
    with open("/proc/%d/stat" % p) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

pids = set(ray.get([pid.remote() for _ in range(2 * workers)]))
ray.get([noop.remote() for _ in range(2000)])
for _ in range(rounds):
    held = [nap.remote(0.5) for _ in range(workers)]
    time.sleep(0.05)                      # every worker asleep: the burst only queues
    c0 = time.process_time()
    refs = [noop.remote() for _ in range(n)]
    submit = (time.process_time() - c0) / n * 1e6
    w0 = sum(cpu_s(p) for p in pids)
    ray.get(held)
    t0 = time.perf_counter()
    while not ray.wait([refs[-1]], timeout=0)[0]:
        time.sleep(0.005)
    t1 = time.perf_counter()
    w1 = sum(cpu_s(p) for p in pids)
    ray.get(refs)
    del refs
    print("ROW %.3f %.0f %.3f" % (submit, n / (t1 - t0), (w1 - w0) / n * 1e6), flush=True)
ray.shutdown()
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=100000)
    a = ap.parse_args()
    print("| workers | drain, tasks/s (median) | workers' CPU per task | driver's CPU per submit "
          "(workers asleep) |")
    print("|---:|---:|---:|---:|")
    for w in a.workers:
        out = subprocess.run([sys.executable, "-c", RUN, str(w), str(a.rounds), str(a.n)],
                             capture_output=True, text=True, timeout=600, env=os.environ)
        rows = [list(map(float, line.split()[1:])) for line in out.stdout.splitlines()
                if line.startswith("ROW")]
        if not rows:
            print(out.stdout + out.stderr, file=sys.stderr)
            raise SystemExit("no rows for %d workers" % w)
        med = [statistics.median(r[k] for r in rows) for k in range(3)]
        print("| %d | %.0fk (%.0fk-%.0fk) | %.2f µs | %.2f µs |"
              % (w, med[1] / 1e3, min(r[1] for r in rows) / 1e3, max(r[1] for r in rows) / 1e3,
                 med[2], med[0]), flush=True)


if __name__ == "__main__":
    main()
