"""Cold start: a fresh interpreter's time from ``init()`` (or creating the
pool) until the first no-op task's result is back, for nanoray,
multiprocessing.Pool and ProcessPoolExecutor.  Each figure is the median of
several fresh processes, so nothing is warm but the OS page cache.  The
driver imports numpy first, as a numeric script does.

    python benchmarks/bench_init.py [--runs 7] [--num-cpus 2]
"""

import argparse
import statistics
import subprocess
import sys

SNIPPETS = {
    "nanoray": """
import nanoray as ray
t0 = time.perf_counter()
ray.init(num_cpus=N)
f = ray.remote(lambda: 1)
ray.get(f.remote())
print(time.perf_counter() - t0)
ray.shutdown()
""",
    "Pool": """
import multiprocessing
t0 = time.perf_counter()
p = multiprocessing.Pool(N)
p.apply(abs, (1,))
print(time.perf_counter() - t0)
p.terminate()
""",
    "ProcessPoolExecutor": """
import concurrent.futures
t0 = time.perf_counter()
p = concurrent.futures.ProcessPoolExecutor(N)
p.submit(abs, 1).result()
print(time.perf_counter() - t0)
p.shutdown()
""",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--num-cpus", type=int, default=2)
    a = ap.parse_args()
    print("%-20s %10s %10s %10s" % ("", "median ms", "min ms", "max ms"))
    for name, body in SNIPPETS.items():
        code = "import time, numpy\nN = %d\n%s" % (a.num_cpus, body)
        times = []
        for _ in range(a.runs):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True)
            times.append(float(out.stdout.split()[0]) * 1e3)
        print("%-20s %10.1f %10.1f %10.1f" % (name, statistics.median(times), min(times),
                                                max(times)))


if __name__ == "__main__":
    main()
