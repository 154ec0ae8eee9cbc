"""The driver's CPU per f.remote() in a pipelined burst of no-op tasks, with
the workers asleep (two long tasks hold both CPUs, so the burst only
queues) and with the workers taking and running the tasks as they come.
The instructions are the same; the difference is what the submit's shared
cache lines cost while other processes write them too.

    python benchmarks/bench_submit_cost.py [--rounds 4] [--n 20000]
"""

import argparse
import time

import nanoray as ray


@ray.remote
def noop():
    return None


@ray.remote
def nap(seconds):
    time.sleep(seconds)


def burst(n):
    c0 = time.process_time()
    refs = [noop.remote() for _ in range(n)]
    cpu = (time.process_time() - c0) / n * 1e6
    return refs, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=20000)
    a = ap.parse_args()
    ray.init(num_cpus=2)
    ray.get([noop.remote() for _ in range(2000)])
    for _ in range(a.rounds):
        held = [nap.remote(1.0) for _ in range(2)]
        time.sleep(0.05)                 # both CPUs taken: the burst only queues
        refs, asleep = burst(a.n)
        ray.get(refs + held)
        del refs
        refs, running = burst(a.n)
        ray.get(refs)
        del refs
        print("driver CPU per remote(): workers asleep %.2f us, workers running %.2f us"
              % (asleep, running), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
