"""16 sleeping tasks (0.1 ... 1.5 s, 12.8 s of work in all) run in parallel.

The pattern of the blog post nanoray started from: launch every task with
.remote() in a loop, collect them with one get().  With num_cpus=16 the
batch takes about as long as its longest task.  The same work then runs on
concurrent.futures.ProcessPoolExecutor with 16 processes for comparison.

    python examples/sleep_fanout.py
"""

import concurrent.futures
import time

import nanoray as ray

DURATIONS = [round(0.1 + 1.4 * i / 15, 3) for i in range(16)]


@ray.remote
def sleeper(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def nap(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def main():
    t0 = time.time()
    ray.init(num_cpus=16)
    refs = [sleeper.remote(d) for d in DURATIONS]
    spans = ray.get(refs)
    elapsed = time.time() - t0
    ray.shutdown()
    print("nanoray:             %d tasks, %.1f s of sleep, done in %.2f s (init included)"
          % (len(DURATIONS), sum(DURATIONS), elapsed))

    t0 = time.time()
    with concurrent.futures.ProcessPoolExecutor(16) as pool:
        futures = [pool.submit(nap, d) for d in DURATIONS]
        pool_spans = [f.result() for f in futures]
    print("ProcessPoolExecutor: %d tasks, %.1f s of sleep, done in %.2f s (start-up included)"
          % (len(DURATIONS), sum(DURATIONS), time.time() - t0))
    return spans, pool_spans


if __name__ == "__main__":
    main()
