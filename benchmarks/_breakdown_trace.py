"""Reading the NR_PROFILE trace (csrc/nr_prof.h) for bench_breakdown.py:
records, call sites resolved with addr2line, one round trip's events."""
import os
import struct
import subprocess

import numpy as np

MAGIC = 0x31464f5250524e4e
REC = np.dtype([("t0", "<i8"), ("t1", "<i8"), ("t2", "<i8"), ("site", "<u8"), ("aux", "<i8"),
                ("pid", "<i4"), ("kind", "<u2"), ("flags", "<u2")])
LOCK, WAIT, WAKE, MARK = 1, 2, 3, 4
SPUN, BLOCKED = 1, 2


def create(path, cap=2_000_000):
    """An empty trace of cap records for the processes to fill."""
    with open(path, "wb") as f:
        f.write(struct.pack("<8Q", MAGIC, cap, 0, 0, 0, 0, 0, 0))
        f.truncate(64 + REC.itemsize * cap)


def load(path):
    with open(path, "rb") as f:
        magic, cap, nxt = struct.unpack("<3Q", f.read(24))
        assert magic == MAGIC, path
        n = min(nxt, cap)
        f.seek(64)
        recs = np.frombuffer(f.read(n * REC.itemsize), dtype=REC)
    return recs, max(0, nxt - cap)


def resolve(so, sites):
    """{site: (function, 'file:line')}: the function nr_lock or the futex
    call sits in (after inlining: the outermost), and the innermost line."""
    sites = sorted(set(int(s) for s in sites))
    if not sites:
        return {}
    out = subprocess.run(["addr2line", "-f", "-i", "-e", so] + ["0x%x" % (s - 1) for s in sites],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    # With -i each address prints a chain of (function, file:line) pairs; the
    # chains are told apart by re-running per address when lengths differ.
    res = {}
    if len(out) == 2 * len(sites):
        chains = [[(out[2 * i], out[2 * i + 1])] for i in range(len(sites))]
    else:
        chains = []
        for s in sites:
            o = subprocess.run(["addr2line", "-f", "-i", "-e", so, "0x%x" % (s - 1)],
                               capture_output=True, text=True, check=True).stdout.splitlines()
            chains.append([(o[i], o[i + 1]) for i in range(0, len(o), 2)])
    for s, chain in zip(sites, chains):
        inner_fn, inner_line = chain[0]
        outer_fn = chain[-1][0]
        line = os.path.basename(inner_line.split(" ")[0])
        res[s] = (short_name(outer_fn), short_name(inner_fn), line)
    return res


def short_name(fn):
    """Cython's mangled names, shortened: __pyx_f_7nanoray_5_core_8_runtime__seal -> _seal."""
    for pre in ("__pyx_pw_7nanoray_5_core_8_runtime_", "__pyx_pf_7nanoray_5_core_8_runtime_",
                "__pyx_f_7nanoray_5_core_8_runtime_"):
        if fn.startswith(pre):
            rest = fn[len(pre):]
            i = 0
            while i < len(rest) and rest[i].isdigit():
                i += 1
            return "cy:" + rest[i:] if i else "cy:" + rest
    return fn


def site_label(rec, names):
    k = int(rec["kind"])
    if k == MARK:
        return "mark%d" % int(rec["site"])
    fn = names.get(int(rec["site"]), ("?", "?", "?"))
    tag = {LOCK: "lock", WAIT: "futex_wait", WAKE: "futex_wake"}[k]
    return "%s %s" % (tag, fn[0] if fn[0] == fn[1] else fn[0] + "/" + fn[1])


def label(rec, names):
    """'nr_task_next@nr_sched.c:286': the function and the line nr_lock (or
    the futex call) was called from."""
    fn = names.get(int(rec["site"]), ("?", "?", "?"))
    return "%s@%s" % (fn[0], fn[2])


def marks(recs, mid):
    m = recs[(recs["kind"] == MARK) & (recs["site"] == mid)]
    return np.sort(m, order="t0")


def pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def round_trips(recs, names):
    """Per round trip (marks RT_BEGIN..RELEASED), the phase durations in
    microseconds, and the lock sections taken in it by site.  Returns
    (phases: {name: [us...]}, locks: {site: count per round trip},
    example: the events of the median round trip)."""
    b, s, g, rel = (marks(recs, i) for i in (1, 2, 3, 4))
    rb, re_ = marks(recs, 5), marks(recs, 6)
    driver = int(b[0]["pid"])
    locks = np.sort(recs[recs["kind"] == LOCK], order="t0")
    waits = np.sort(recs[recs["kind"] == WAIT], order="t0")
    wakes = np.sort(recs[recs["kind"] == WAKE], order="t0")
    lab = {int(x): label({"site": x}, names) for x in np.unique(recs["site"][recs["kind"] != MARK])}
    n = min(len(b), len(s), len(g), len(rel))
    ph = {k: [] for k in ("submit: remote() to its first lock (args pickled, spec built)",
                          "submit: arena_alloc section (spec)", "submit: task_submit section",
                          "submit: after the section (wake-up, ref made)",
                          "queue: submitted until a worker asks the lock",
                          "  of which: worker's futex wake-up (if it slept)",
                          "take: nr_task_next section (wait + hold)",
                          "deserialize: taken until the body runs (function, args)",
                          "run: the body (two marks, no work)",
                          "store: body end to sealed (pickle, alloc, seal sections)",
                          "notify + get: sealed until get() returns",
                          "  of which: getter's futex wake-up (if it slept)",
                          "release: del ref (decref section)",
                          "worker after seal: event record + finish section (off the getter's path)",
                          "round trip: remote() to get() returned")}
    keys = list(ph)
    per_site = {}
    nrt = 0
    example = None
    for i in range(n - 1):
        t0, t1 = b[i]["t0"], b[i + 1]["t0"]
        run_b = rb[(rb["t0"] > t0) & (rb["t0"] < g[i]["t0"])]
        run_e = re_[(re_["t0"] > t0) & (re_["t0"] < g[i]["t0"])]
        if len(run_b) != 1 or len(run_e) != 1:
            continue
        w = int(run_b[0]["pid"])
        L = locks[(locks["t0"] >= t0) & (locks["t0"] < t1)]
        Ld = L[(L["pid"] == driver) & (L["t0"] < s[i]["t0"])]
        if len(Ld) < 1:
            continue
        sub = Ld[-1]
        Lw = L[L["pid"] == w]
        take = Lw[Lw["t2"] <= run_b[0]["t0"]]
        after = Lw[Lw["t0"] >= run_e[0]["t0"]]
        seal = [x for x in after if lab[int(x["site"])].startswith("nr_object_seal")]
        if len(take) == 0 or not seal:
            continue
        take, seal = take[-1], seal[0]
        wk = waits[(waits["pid"] == w) & (waits["t1"] >= sub["t2"]) & (waits["t1"] <= take["t0"])]
        gw = waits[(waits["pid"] == driver) & (waits["t1"] >= seal["t2"]) & (waits["t1"] <= g[i]["t0"])]
        fin = after[after["t0"] > seal["t2"]]
        us = lambda x: float(x) / 1e3
        vals = [us(Ld[0]["t0"] - t0),
                sum(us(x["t2"] - x["t0"]) for x in Ld[:-1]),
                us(sub["t2"] - sub["t0"]),
                us(s[i]["t0"] - sub["t2"]),
                us(take["t0"] - sub["t2"]),
                us(wk[-1]["t1"] - sub["t2"]) if len(wk) else None,
                us(take["t2"] - take["t0"]),
                us(run_b[0]["t0"] - take["t2"]),
                us(run_e[0]["t0"] - run_b[0]["t0"]),
                us(seal["t2"] - run_e[0]["t0"]),
                us(g[i]["t0"] - seal["t2"]),
                us(gw[-1]["t1"] - seal["t2"]) if len(gw) else None,
                us(rel[i]["t0"] - g[i]["t0"]),
                us(fin[0]["t2"] - seal["t2"]) if len(fin) else None,
                us(g[i]["t0"] - t0)]
        for k, v in zip(keys, vals):
            if v is not None:
                ph[k].append(v)
        nrt += 1
        for x in L:
            role = "driver" if int(x["pid"]) == driver else "worker"
            key = (role, lab[int(x["site"])])
            per_site[key] = per_site.get(key, 0) + 1
    per_site = {k: v / max(nrt, 1) for k, v in per_site.items()}
    return ph, per_site, nrt


def example_events(recs, names, i=None):
    """The events of round trip i (default: the one of median length), as
    (who, start us, end us, what)."""
    b, rel, g = marks(recs, 1), marks(recs, 4), marks(recs, 3)
    if i is None:
        n = min(len(b), len(g))
        i = int(np.argsort(g["t0"][:n] - b["t0"][:n])[n // 2])
    driver = int(b[0]["pid"])
    t0, t1 = b[i]["t0"], rel[i]["t0"]
    w = recs[(recs["t0"] >= t0) & (recs["t0"] <= t1)]
    w = np.sort(w, order="t0")
    out = []
    for e in w:
        who = "driver" if int(e["pid"]) == driver else "worker %d" % int(e["pid"])
        k = int(e["kind"])
        end = e["t2"] if k == LOCK else e["t1"]
        what = {1: "RT_BEGIN", 2: "SUBMITTED", 3: "GOT", 4: "RELEASED", 5: "RUN_B",
                6: "RUN_E"}.get(int(e["site"]), "mark") if k == MARK else \
            ("lock " if k == LOCK else "futex_wait " if k == WAIT else "futex_wake ") + label(e, names)
        if k == LOCK:
            what += "  (held %.2f us)" % ((e["t2"] - e["t1"]) / 1e3)
        out.append((who, (e["t0"] - t0) / 1e3, (end - t0) / 1e3, what))
    return out


def lock_holds(recs, names, t_from, t_to):
    """Lock sections begun in [t_from, t_to): per site, count, hold and wait
    percentiles (us), and how many were contended (spun or blocked)."""
    L = recs[(recs["kind"] == LOCK) & (recs["t0"] >= t_from) & (recs["t0"] < t_to)]
    out = {}
    sites = np.unique(L["site"])
    for s in sites:
        x = L[L["site"] == s]
        hold = (x["t2"] - x["t1"]) / 1e3
        wait = (x["t1"] - x["t0"]) / 1e3
        out[label({"site": s}, names)] = {
            "n": int(len(x)), "hold_sum_us": float(hold.sum()),
            "hold_p50": pct(hold, 50), "hold_p90": pct(hold, 90), "hold_p99": pct(hold, 99),
            "hold_max": float(hold.max()), "wait_p50": pct(wait, 50), "wait_p99": pct(wait, 99),
            "contended": int(((x["flags"] & (SPUN | BLOCKED)) != 0).sum()),
            "blocked": int(((x["flags"] & BLOCKED) != 0).sum())}
    return out
