"""Instructions per pipelined task, driver and worker, counted by callgrind
(repeatable on a noisy machine, where timings are not).

Each tree runs the same script twice under `valgrind --tool=callgrind
--trace-children=yes`: a 1-CPU runtime submits N no-op tasks `f.remote(i)`
in a loop, gets them all and drops the refs; then every process's counts
are dumped (callgrind_control -d).  The difference between N = n1 and
N = n2, divided by n2 - n1, is what one more task costs each side: the
driver (submit, get, release) and the worker (take, load the arguments,
run, store the result, finish).  Spinning is off (NANORAY_GET_SPIN_US=0,
NANORAY_WORKER_SPIN_US=0), so waiting burns no instructions.

    python benchmarks/bench_task_ir.py OLD/src NEW/src [--n1 1000 --n2 6000]
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

SCRIPT = r"""
import os, subprocess, sys, nanoray as ray
n = int(sys.argv[1])
ray.init(num_cpus=1)
@ray.remote
def noop(x=None):
    return None
@ray.remote
def pid():
    return os.getpid()
ray.get([noop.remote(i) for i in range(200)])
worker = ray.get(pid.remote())
refs = [noop.remote(i) for i in range(n)]
ray.get(refs)
del refs
print("PIDS", os.getpid(), worker, flush=True)
subprocess.run(["callgrind_control", "-d"], capture_output=True)
ray.shutdown()
"""
_SUMMARY = re.compile(r"^summary: (\d+)", re.M)


def counts(src, n, tmp):
    out = os.path.join(tmp, "n%d" % n)
    os.makedirs(out)
    script = os.path.join(tmp, "ir.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    env = dict(os.environ, PYTHONPATH=src, NANORAY_GET_SPIN_US="0", NANORAY_WORKER_SPIN_US="0")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes",
                        "--callgrind-out-file=%s/cg.%%p.out" % out, sys.executable, script, str(n)],
                       env=env, capture_output=True, text=True, timeout=1800)
    pids = next(line.split()[1:] for line in r.stdout.splitlines() if line.startswith("PIDS"))
    result = []
    for pid in pids:
        dumps = sorted(glob.glob("%s/cg.%s.out.*" % (out, pid)))
        with open(dumps[0]) as f:
            result.append(int(_SUMMARY.search(f.read()).group(1)))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trees", nargs="+", help="source directories (PYTHONPATH) to compare")
    ap.add_argument("--n1", type=int, default=1000)
    ap.add_argument("--n2", type=int, default=6000)
    a = ap.parse_args()
    print("| tree | driver Ir/task | worker Ir/task | sum |")
    print("|---|---:|---:|---:|")
    for src in a.trees:
        with tempfile.TemporaryDirectory() as tmp:
            lo = counts(src, a.n1, tmp)
            hi = counts(src, a.n2, tmp)
        per = [(h - l) / (a.n2 - a.n1) for l, h in zip(lo, hi)]
        print("| %s | %.0f | %.0f | %.0f |" % (src, per[0], per[1], sum(per)), flush=True)


if __name__ == "__main__":
    main()
