"""Tasks with a runtime_env: what running them in workers of their own costs.

Figures, each the median of --rounds rounds (a fresh runtime per round):

  plain tasks/s      no-op tasks without a runtime_env, submitted in a burst
                     of --tasks, then all collected
  env tasks/s        the same with one runtime_env (env_vars): they run in
                     workers keyed to it (the scheduler's xq path)
  new env ms         a task in a runtime_env no worker has run yet, from
                     .remote() until its result: a fresh worker is forked
                     for it (median over 6 new environments a round)
  env switch ms      a task of an environment whose worker exists and is
                     idle, right after a task of another one
  behind backlog ms  a task in a new runtime_env submitted just before 100
                     plain 20 ms tasks (1 s of work on 2 CPUs): from
                     .remote() until it starts (median over 3 a round)

With --ray (Ray installed), the same figures for Ray in the same run: Ray
also starts workers per runtime_env.

    python benchmarks/bench_runtime_env.py [--rounds 5] [--tasks 20000] [--ray]
"""

import argparse
import os
import statistics
import time


def noop():
    return None


def env_value():
    return os.environ.get("NR_BENCH_ENV")


def sleep20():
    time.sleep(0.02)


def started_at():
    return time.monotonic()


def measure(ray, tasks):
    f = ray.remote(noop)
    g = ray.remote(env_value)
    ray.get([f.remote() for _ in range(100)])              # the pool is up
    t0 = time.perf_counter()
    ray.get([f.remote() for _ in range(tasks)])
    plain = tasks / (time.perf_counter() - t0)
    e = f.options(runtime_env={"env_vars": {"NR_BENCH_ENV": "steady"}})
    ray.get([e.remote() for _ in range(100)])              # its workers are up
    t0 = time.perf_counter()
    ray.get([e.remote() for _ in range(tasks)])
    env = tasks / (time.perf_counter() - t0)
    new, switch = [], []
    stamp = "%d-%d" % (os.getpid(), time.monotonic_ns())
    for i in range(6):
        opts = {"runtime_env": {"env_vars": {"NR_BENCH_ENV": "%s-%d" % (stamp, i)}}}
        t0 = time.perf_counter()
        assert ray.get(g.options(**opts).remote()) == "%s-%d" % (stamp, i)
        new.append((time.perf_counter() - t0) * 1e3)
        ray.get(f.remote())                                # a plain task between
        t0 = time.perf_counter()
        ray.get(g.options(**opts).remote())
        switch.append((time.perf_counter() - t0) * 1e3)
    slow, when = ray.remote(sleep20), ray.remote(started_at)
    behind = []
    for i in range(3):
        opts = {"runtime_env": {"env_vars": {"NR_BENCH_ENV": "%s-late-%d" % (stamp, i)}}}
        t0 = time.monotonic()
        ref = when.options(**opts).remote()
        backlog = [slow.remote() for _ in range(100)]
        behind.append((ray.get(ref) - t0) * 1e3)
        ray.get(backlog)
    return {"plain tasks/s": plain, "env tasks/s": env,
            "new env ms": statistics.median(new), "env switch ms": statistics.median(switch),
            "behind backlog ms": statistics.median(behind)}


def one_round(backend, tasks):
    if backend == "ray":
        import ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            return measure(ray, tasks)
        finally:
            ray.shutdown()
    import nanoray
    nanoray.init(num_cpus=2)
    try:
        return measure(nanoray, tasks)
    finally:
        nanoray.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--ray", action="store_true", help="Ray too, in the same run")
    a = ap.parse_args()
    backends = ["nanoray"] + (["ray"] if a.ray else [])
    results = {b: [] for b in backends}
    for _ in range(a.rounds):
        for b in backends:
            results[b].append(one_round(b, a.tasks if b == "nanoray" else min(a.tasks, 2000)))
    keys = list(results["nanoray"][0])
    print("%-16s" % "" + "".join("%16s" % b for b in backends))
    for k in keys:
        print("%-16s" % k + "".join("%16.1f" % statistics.median(r[k] for r in results[b])
                                     for b in backends))
    print("num_cpus=2, medians of %d rounds; %d tasks a burst (Ray: %d)"
          % (a.rounds, a.tasks, min(a.tasks, 2000)))


if __name__ == "__main__":
    main()
