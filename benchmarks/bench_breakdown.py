"""Where each microsecond of a task's life goes, and how long each critical
section holds the one region lock; a model of that lock at 16 and 64 cores.

  python3 benchmarks/bench_breakdown.py [--rt 2000] [--batches 20] [--no-callgrind]

What it does (each step in a process of its own, see _breakdown_runs.py):
 1. builds a second copy of the runtime with NANORAY_PROFILE=1 (csrc/nr_prof.h:
    timestamps at every region-lock section and futex call, symbols kept)
    into build/prof/, leaving the normal build in src/ untouched;
 2. traces one no-op round trip at a time (f.remote(), get, del) with one
    worker, twice: spinners free to share a core, and pinned (driver on CPU 0,
    worker on CPU 1); then with 2 ms between round trips (everyone sleeps: the
    futex path); phase boundaries are the lock sections, futex calls, and
    ctypes marks in the driver and in the task's body;
 3. traces pipelined no-op tasks (batches of 1000, 2 workers) and reports
    every lock section's hold and wait per call site;
 4. counts instructions per phase with callgrind (nr_prof_mark dumps the
    counts at each mark), spinning off so waits cost no instructions;
 5. measures the lock word's cost in hardware (lockline.c) and feeds the
    measured lock demand into the contention model (_breakdown_model.py);
 6. checks the tracing's own cost: the same loops on the normal build
    (no marks, no hooks) and on the profile build with tracing on.
Prints markdown; --json writes every figure.  Re-run after changes to the C
core: sites are found by address (addr2line), phases by function names."""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _breakdown_cg as CG      # noqa: E402
import _breakdown_model as MODEL  # noqa: E402
import _breakdown_trace as T    # noqa: E402

PROF = os.path.join(ROOT, "build", "prof")
PKG = os.path.join(PROF, "pkg")
RUNS = os.path.join(HERE, "_breakdown_runs.py")


def build_profile():
    env = dict(os.environ, NANORAY_PROFILE="1")
    subprocess.run([sys.executable, "setup.py", "build_ext", "-q", "--build-lib",
                    os.path.join(PROF, "lib"), "--build-temp", os.path.join(PROF, "tmp")],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    shutil.rmtree(PKG, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "src", "nanoray"), os.path.join(PKG, "nanoray"),
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    for so in glob.glob(os.path.join(PROF, "lib", "nanoray", "_core", "*.so")):
        shutil.copy(so, os.path.join(PKG, "nanoray", "_core"))
    return glob.glob(os.path.join(PKG, "nanoray", "_core", "_runtime*.so"))[0]


def run(scenario, n, trace=None, pkg=PKG, **env):
    e = dict(os.environ, PYTHONPATH=pkg + os.pathsep + HERE, **{k: str(v) for k, v in env.items()})
    e.pop("NANORAY_PROF_FILE", None)
    if trace:
        T.create(trace)
        e["NANORAY_PROF_FILE"] = trace
    out = subprocess.run([sys.executable, RUNS, scenario, str(n)], env=e, check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def med(v):
    return statistics.median(v) if v else float("nan")


def mark_cost(recs):
    c = T.marks(recs, 20)
    return float(np.median(np.diff(c["t0"]))) / 1e3 if len(c) > 2 else float("nan")


def rt_section(title, recs, names, cmd):
    ph, per_site, nrt = T.round_trips(recs, names)
    mc = mark_cost(recs)
    lines = ["#### %s" % title, "", "`%s` — %d round trips; one ctypes mark costs %.2f us "
             "(phases bounded by marks carry about one; not subtracted)." % (cmd, nrt, mc), "",
             "| phase | median us | p90 us | n |", "|---|---:|---:|---:|"]
    for k, v in ph.items():
        if v:
            lines.append("| %s | %.2f | %.2f | %d |" % (k, med(v), float(np.percentile(v, 90)), len(v)))
    lines += ["", "Lock sections per round trip, by call site:", "",
              "| process | site | per round trip |", "|---|---|---:|"]
    for (role, site), c in sorted(per_site.items()):
        lines.append("| %s | %s | %.2f |" % (role, site, c))
    lines.append("| all | | %.2f |" % sum(per_site.values()))
    lines += ["", "The round trip of median length, event by event (us from remote()):", "", "```"]
    lines += ["%-13s %8.2f %8.2f  %s" % e for e in T.example_events(recs, names)]
    lines += ["```", ""]
    return "\n".join(lines), {"phases_median_us": {k: med(v) for k, v in ph.items()},
                              "locks_per_rt": {"%s %s" % k: v for k, v in per_site.items()},
                              "mark_us": mc}


def pipe_section(recs, names, cmd):
    b, e = T.marks(recs, 10), T.marks(recs, 12)
    bs = T.marks(recs, 11)
    cycles = range(1, len(b) - 1)                # the first batch warms up
    t_from, t_to = b[1]["t0"], b[len(b) - 1]["t0"]
    ntasks = 1000 * len(cycles)
    holds = T.lock_holds(recs, names, t_from, t_to)
    rate = [1000 / ((e[i]["t0"] - b[i]["t0"]) / 1e9) for i in cycles]
    submit_us = [(bs[i]["t0"] - b[i]["t0"]) / 1e3 / 1000 for i in cycles]
    total_hold = sum(h["hold_sum_us"] for h in holds.values())
    nsec = sum(h["n"] for h in holds.values())
    span_us = (t_to - t_from) / 1e3
    lines = ["#### Lock hold times, pipelined no-op tasks, 2 workers", "",
             "`%s` — %d tasks in %d batches of 1000; %.0f tasks/s (median batch); the driver "
             "spends %.2f us per submit." % (cmd, ntasks, len(cycles), med(rate), med(submit_us)), "",
             "| site | per task | hold p50 | p90 | p99 | max | wait p50 | p99 | contended | "
             "share of D |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for site, h in sorted(holds.items(), key=lambda kv: -kv[1]["hold_sum_us"]):
        lines.append("| %s | %.2f | %.3f | %.3f | %.3f | %.1f | %.3f | %.2f | %.1f%% | %.0f%% |" % (
            site, h["n"] / ntasks, h["hold_p50"], h["hold_p90"], h["hold_p99"], h["hold_max"],
            h["wait_p50"], h["wait_p99"], 100.0 * h["contended"] / h["n"],
            100.0 * h["hold_sum_us"] / total_hold))
    demand = total_hold / ntasks
    lines += ["", "Per task: **k = %.2f sections, D = %.3f us of lock hold** (hold measured from "
              "taken to just before the release; includes one clock read, ~%s ns). Measured lock "
              "utilisation on 2 cores: rho = %.3f (sum of holds / wall time)." % (
                  nsec / ntasks, demand, "20-40", total_hold / span_us), ""]
    return "\n".join(lines), {"tasks_per_s": med(rate), "submit_us": med(submit_us),
                              "k": nsec / ntasks, "D_us": demand, "rho_2cores": total_hold / span_us,
                              "sites": holds}


def cg_section(outdir, cmd):
    ph = CG.phases(outdir)
    mark = ph.get("worker: run (body = marks)", {}).get("total", 0)
    lines = ["#### Instructions per phase (callgrind)", "",
             "`%s` — one worker, NANORAY_GET_SPIN_US=0 NANORAY_WORKER_SPIN_US=0 (waits sleep "
             "in the kernel, which callgrind does not count); medians over the dumps. Each phase "
             "is bounded by marks: one ctypes mark costs %d instructions (the body's interval), "
             "subtracted in the 'net' column." % (cmd, mark), "",
             "| phase | Ir | net Ir | inside it (inclusive Ir) |", "|---|---:|---:|---|"]
    for name, row in ph.items():
        parts = ", ".join("%s %d" % (k, v) for k, v in row.items()
                          if k not in ("total", "n", "ctypes (marks)") and v >= 30)
        lines.append("| %s | %d | %d | %s |" % (name, row["total"], row["total"] - mark, parts))
    lines.append("")
    return "\n".join(lines), {"phases": ph, "mark_ir": mark}


def lockline():
    exe = os.path.join(PROF, "lockline")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "lockline.c"), "-lpthread"], check=True)
    runs = [json.loads(subprocess.run([exe], capture_output=True, text=True, check=True).stdout)
            for _ in range(5)]
    # Latencies: the least of 5 (what the hardware does when no other
    # process on this shared VM gets in the way).
    return {k: min(r[k] for r in runs) for k in runs[0]}


def model_section(demand, k, c_us, transfer_us):
    lines = ["#### The one lock at 16 and 64 cores (model)", "",
             "Closed-network MVA (_breakdown_model.py) from the measured D = %.3f us and k = %.2f "
             "per task, c = %.1f us of CPU per task outside the lock (submit + worker + get, every "
             "core submitting its own tasks), and a cross-core hand-off of the lock word of "
             "%.3f us per acquisition (measured, lockline.c) in the pessimistic variant. "
             "Saturation (rho -> 1) without waiting at N* = (c + s + D) / D cores: %.0f for no-op "
             "tasks, %.0f at 0.1 ms, %.0f at 1 ms." % (
                 demand, k, c_us, transfer_us, MODEL.saturation_cores(demand, c_us, 0),
                 MODEL.saturation_cores(demand, c_us, 100), MODEL.saturation_cores(demand, c_us, 1000)),
             "", "| task | cores | variant | tasks/s | lock rho | lock wait per task us | efficiency |",
             "|---|---:|---|---:|---:|---:|---:|"]
    rows = MODEL.table(demand, k, c_us, transfer_us)
    for r in rows:
        lines.append("| %s | %d | %s | %.0f | %.2f | %.2f | %.2f |" % (
            "no-op" if r["task_us"] == 0 else "%.1f ms" % (r["task_us"] / 1000), r["cores"],
            r["variant"], r["tasks_per_s"], r["rho"], r["lock_wait_us_per_task"], r["efficiency"]))
    lines.append("")
    return "\n".join(lines), rows


def overhead(rounds, n_rt, batches):
    res = {"normal build": {"rt": [], "pipe": []}, "profile build, tracing": {"rt": [], "pipe": []}}
    trace = os.path.join(PROF, "overhead.bin")
    for _ in range(rounds):
        for name, pkg, tr in (("normal build", os.path.join(ROOT, "src"), None),
                              ("profile build, tracing", PKG, trace)):
            res[name]["rt"].append(run("plain_rt", n_rt, tr, pkg, BD_CPUS=1)["rt_median_us"])
            res[name]["pipe"].append(run("plain_pipe", batches, tr, pkg)["tasks_per_s_median"])
    out = {k: {"rt_us": med(v["rt"]), "pipe_per_s": med(v["pipe"])} for k, v in res.items()}
    lines = ["#### What the tracing costs", "",
             "Interleaved, %d rounds, medians; the same loops without marks." % rounds, "",
             "| build | round trip us (1 worker) | pipelined tasks/s (2 workers) |", "|---|---:|---:|"]
    for k, v in out.items():
        lines.append("| %s | %.2f | %.0f |" % (k, v["rt_us"], v["pipe_per_s"]))
    lines.append("")
    return "\n".join(lines), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rt", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    so = glob.glob(os.path.join(PKG, "nanoray", "_core", "_runtime*.so"))
    so = so[0] if a.no_build and so else build_profile()
    os.makedirs(PROF, exist_ok=True)
    out, figures = [], {}
    me = "python3 benchmarks/bench_breakdown.py"
    for key, title, scenario, env in (
            ("rt", "One round trip, 1 worker, spinners free to share a core", "rt", {"BD_CPUS": 1}),
            ("rt_pinned", "One round trip, 1 worker, driver on CPU 0 and worker on CPU 1",
             "rt", {"BD_CPUS": 1, "BD_PIN": 1}),
            ("rt_idle", "One round trip after 2 ms idle (both sides asleep: futex wake-ups)",
             "rt_idle", {"BD_CPUS": 1})):
        trace = os.path.join(PROF, key + ".bin")
        n = a.rt if scenario == "rt" else max(200, a.rt // 4)
        run(scenario, n, trace, **env)
        recs, dropped = T.load(trace)
        names = T.resolve(so, recs["site"][recs["kind"] != T.MARK])
        cmd = "%s (%s: %s, n=%d)" % (me, key, " ".join("%s=%s" % kv for kv in env.items()), n)
        text, fig = rt_section(title, recs, names, cmd)
        out.append(text)
        figures[key] = fig
    trace = os.path.join(PROF, "pipe.bin")
    figures["pipe_run"] = run("pipe", a.batches, trace, BD_CPUS=2)
    recs, _ = T.load(trace)
    names = T.resolve(so, recs["site"][recs["kind"] != T.MARK])
    text, fig = pipe_section(recs, names, "%s (pipe: BD_CPUS=2, %d batches)" % (me, a.batches))
    out.append(text)
    figures["pipe"] = fig
    if not a.no_callgrind:
        cgdir = os.path.join(PROF, "callgrind")
        os.makedirs(cgdir, exist_ok=True)
        CG.run(RUNS, PKG, cgdir, n=20)
        text, fig = cg_section(cgdir, "valgrind --tool=callgrind --trace-children=yes python3 "
                               "benchmarks/_breakdown_runs.py rt 20")
        out.append(text)
        figures["callgrind"] = fig
    hw = lockline()
    figures["lockline_ns"] = hw
    out.append("#### The lock word in hardware (lockline.c, least of 5 runs, ns)\n\n" +
               "| " + " | ".join(hw) + " |\n|" + "---:|" * len(hw) + "\n| " +
               " | ".join("%.1f" % v for v in hw.values()) + " |\n")
    ph = figures["rt_pinned"]["phases_median_us"]
    mark = figures["rt_pinned"]["mark_us"]
    # CPU a task costs outside the lock: the pinned round trip's busy phases
    # (its waits left out), less the ~3.5 marks they carry, less the holds.
    cpu = [k for k in ph if k.startswith(("submit", "take", "deserialize", "store", "notify",
                                          "release", "worker after"))]
    c_us = max(1.0, sum(ph[k] for k in cpu) - 3.5 * mark - figures["pipe"]["D_us"])
    transfer = max(0.0, (hw["lock_handoff"] - hw["lock_local"]) / 1e3)
    text, rows = model_section(figures["pipe"]["D_us"], figures["pipe"]["k"], c_us, transfer)
    out.append(text)
    figures["model"] = {"c_us": c_us, "transfer_us": transfer, "rows": rows}
    text, fig = overhead(a.rounds, max(500, a.rt // 2), max(5, a.batches // 2))
    out.append(text)
    figures["overhead"] = fig
    print("\n".join(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f, indent=1, default=float)


if __name__ == "__main__":
    main()
