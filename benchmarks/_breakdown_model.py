"""The contention model of bench_breakdown.py: how the one region lock
would fare at N cores, from the per-task lock demand measured on 2 cores.

A closed queueing network solved by exact Mean Value Analysis: N cores
(customers) each loop through "work outside the lock" (a delay station of
Z = c + s seconds: c the per-task CPU cost outside the lock, s the task's
own work) and "the lock" (one server, demand D per task = the sum of its
sections' hold times).  MVA: for n = 1..N, R(n) = D (1 + Q(n-1)),
X(n) = n / (Z + R(n)), Q(n) = X(n) R(n).  Exponential holds make it a
little pessimistic next to the near-fixed holds measured; the bound
X <= min(N / (Z + D), 1 / D) holds regardless.

On 2 cores most acquisitions find the lock word in the cache of the core
that takes it; at 16 and 64 busy cores nearly every acquisition is a
hand-off from another core, so the pessimistic variant adds one measured
cross-core transfer per acquisition: D' = D + k * t_transfer."""


def mva(n_cores, demand_us, z_us):
    q = 0.0
    x = r = 0.0
    for n in range(1, n_cores + 1):
        r = demand_us * (1 + q)
        x = n / (z_us + r)
        q = x * r
    return x * 1e6, x * demand_us, r - demand_us     # tasks/s, utilisation, wait per task (us)


def table(demand_us, k, c_us, transfer_us, cores=(2, 16, 64), works_us=(0.0, 100.0, 1000.0)):
    rows = []
    for s in works_us:
        for n in cores:
            for variant, d in (("measured D", demand_us), ("D + k transfers", demand_us + k * transfer_us)):
                x, rho, w = mva(n, d, c_us + s)
                rows.append({"cores": n, "task_us": s, "variant": variant, "tasks_per_s": x,
                             "rho": rho, "lock_wait_us_per_task": w,
                             "efficiency": x / (n / (c_us + s + d) * 1e6),
                             "bound_per_s": 1e6 / d})
    return rows


def saturation_cores(demand_us, c_us, s_us):
    """Cores at which the lock would be busy all the time were there no
    waiting: N* = (Z + D) / D."""
    return (c_us + s_us + demand_us) / demand_us
