"""Callgrind instruction counts per phase, for bench_breakdown.py.

The NR_PROFILE build's nr_prof_mark dumps callgrind's counts at every mark
(CALLGRIND_DUMP_STATS_AT, zeroing them), so each dump file holds exactly the
instructions a process ran between two marks: in the driver, RELEASED ->
RT_BEGIN (loop), RT_BEGIN -> SUBMITTED (submit), SUBMITTED -> GOT (get),
GOT -> RELEASED (release); in the worker, RUN_E -> RUN_B (store of the last
task, finish, next, take, deserialize of this one) and RUN_B -> RUN_E (the
body: one ctypes mark, which calibrates what a mark costs).  Within each,
callgrind_annotate --inclusive=yes splits it by function."""
import glob
import os
import re
import statistics
import subprocess

PHASE = {1: "driver: loop (between round trips)", 2: "driver: submit (f.remote())",
         3: "driver: get (wait + deserialize)", 4: "driver: release (del ref)",
         5: "worker: store + finish + next + take + deserialize", 6: "worker: run (body = marks)"}
# Functions whose inclusive count is shown inside a phase (substring match).
FUNCS = [("_submit", "__pyx_f_7nanoray_5_core_8_runtime__submit"),
         ("_pickle", "__pyx_f_7nanoray_5_core_8_runtime__pickle"),
         ("_adopt", "__pyx_f_7nanoray_5_core_8_runtime__adopt"),
         ("nr_task_submit", ":nr_task_submit "), ("nr_arena_alloc", ":nr_arena_alloc "),
         ("nr_object_wait", ":nr_object_wait "), ("_wait_one", "runtime__wait_one "),
         ("_value", "__pyx_f_7nanoray_5_core_8_runtime__value "),
         ("_load", "__pyx_f_7nanoray_5_core_8_runtime__load "),
         ("nr_object_decref", ":nr_object_decref "),
         ("_complete", "runtime__complete "), ("_seal", "__pyx_f_7nanoray_5_core_8_runtime__seal "),
         ("nr_object_seal", ":nr_object_seal "), ("_record_event", "runtime__record_event "),
         ("nr_task_finish", ":nr_task_finish "), ("nr_task_next", ":nr_task_next "),
         ("_prepare", "runtime__prepare "), ("_function", "runtime__function "),
         ("nr_lock", ":nr_lock "), ("unlock (wrapped)", "__wrap_pthread_mutex_unlock"),
         ("nr_futex_wake", ":nr_futex_wake "), ("nr_futex_wait", ":nr_futex_wait "),
         ("pickle.dumps (C)", "_pickle_dumps"), ("pickle.loads (C)", "_pickle_loads"),
         ("ctypes (marks)", ":PyCFuncPtr_call ")]

_TRIGGER = re.compile(r"^desc: Trigger: Client Request: mark-([0-9a-f]+)", re.M)
_SUMMARY = re.compile(r"^summary: (\d+)", re.M)
_LINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$")


def run(runs_py, pkg, outdir, n=20, scenario="rt"):
    """Runs the scenario under callgrind (one worker, spinning off so that
    waits are futex sleeps, whose kernel time callgrind does not count)."""
    for f in glob.glob(os.path.join(outdir, "cg.*")):
        os.unlink(f)
    env = dict(os.environ, BD_CALLGRIND="1", BD_WARM="50", BD_CPUS="1",
               NANORAY_GET_SPIN_US="0", NANORAY_WORKER_SPIN_US="0",
               PYTHONPATH=pkg + os.pathsep + os.path.dirname(runs_py))
    env.pop("NANORAY_PROF_FILE", None)
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
           "--callgrind-out-file=" + os.path.join(outdir, "cg.%p"),
           "python3", runs_py, scenario, str(n)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
    return cmd


def inclusive(path):
    """{function line: inclusive Ir} from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        m = _LINE.match(line)
        if m:
            res[m.group(2)] = int(m.group(1).replace(",", ""))
    return res


def phases(outdir):
    """{phase: {"total": median Ir, func: median inclusive Ir, "n": dumps}}."""
    acc = {}
    for path in sorted(glob.glob(os.path.join(outdir, "cg.*.*"))):
        text = open(path, errors="replace").read(4096)
        m = _TRIGGER.search(text)
        s = _SUMMARY.search(text)
        if not m or not s:
            continue
        mid = int(m.group(1), 16)
        if mid not in PHASE:
            continue
        inc = inclusive(path)
        row = {"total": int(s.group(1))}
        for name, pat in FUNCS:
            v = max((c for fn, c in inc.items() if pat in fn + " "), default=0)
            row[name] = v
        acc.setdefault(PHASE[mid], []).append(row)
    out = {}
    for ph, rows in acc.items():
        rows = rows[1:] if len(rows) > 2 else rows       # the first may include warm-up
        out[ph] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        out[ph]["n"] = len(rows)
    return out
