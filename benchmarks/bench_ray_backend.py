"""What nanoray's Ray backend adds to Ray: the same no-op task round trip
and pipelined burst, through `import ray` and through `import nanoray as
ray` with backend="ray", in alternating fresh processes (Ray must be
installed: pip install 'nanoray[ray]').

    python benchmarks/bench_ray_backend.py --rounds 2
"""

import argparse
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
if sys.argv[1] == "ray":
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
else:
    import nanoray as ray
    ray.init(backend="ray", num_cpus=2, log_to_driver=False)

@ray.remote
def f(x=None):
    return x
ray.get(f.remote())
best_rt, best_pl = float("inf"), 0.0
for _ in range(3):
    t = time.perf_counter()
    for _ in range(300):
        ray.get(f.remote())
    best_rt = min(best_rt, (time.perf_counter() - t) / 300 * 1e6)
    t = time.perf_counter()
    ray.get([f.remote() for _ in range(3000)])
    best_pl = max(best_pl, 3000 / (time.perf_counter() - t))
print(best_rt, best_pl)
ray.shutdown()
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    got = {"ray": [], "nanoray": []}
    for _ in range(args.rounds):
        for who in got:
            out = subprocess.run([sys.executable, "-c", CHILD, who], capture_output=True,
                                 text=True, timeout=300)
            if out.returncode:
                sys.exit(out.stderr)
            rt, pl = map(float, out.stdout.split()[-2:])
            got[who].append((rt, pl))
    print("%-22s %16s %20s" % ("", "round trip (us)", "pipelined (tasks/s)"))
    for who, rows in got.items():
        label = "Ray" if who == "ray" else "nanoray on Ray"
        print("%-22s %16.0f %20.0f" % (label, statistics.median(r[0] for r in rows),
                                        statistics.median(r[1] for r in rows)))


if __name__ == "__main__":
    main()
