"""Two 1000x1000 matrix products at once on num_cpus=2 (BLAS threads per task).

    python benchmarks/bench_blas.py

Each task is granted one CPU; its BLAS runs one thread (nanoray/_threads.py),
so the two products share the two cores instead of running four threads on
them.  Prints the best of 5 rounds, and the BLAS thread count a task sees.
"""

import time

import numpy as np

import nanoray as ray


def main():
    ray.init(num_cpus=2)

    @ray.remote
    def dot(a, b):
        return float((a @ b)[0, 0])

    @ray.remote
    def blas_threads():
        from nanoray._threads import threads
        return sorted(set(threads().values()))

    a, b = ray.put(np.random.rand(1000, 1000)), ray.put(np.random.rand(1000, 1000))
    ray.get([dot.remote(a, b) for _ in range(2)])
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        ray.get([dot.remote(a, b) for _ in range(2)])
        best = min(best, time.perf_counter() - t)
    print("two parallel 1000x1000 dots: %.1f ms; BLAS threads in a task: %s"
          % (best * 1e3, ray.get(blas_threads.remote())))
    ray.shutdown()


if __name__ == "__main__":
    main()
