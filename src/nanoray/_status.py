"""``python -m nanoray status``: what the nanoray runtimes of this user are
doing now, read from outside the program.

Each runtime's shared region is a memfd named "nanoray" that its processes
hold open; this command finds one through /proc/PID/fd, maps it, and reads
the same snapshots as nanoray.util.state (it takes the region lock briefly,
as any of the runtime's processes does, and changes nothing)."""

import os

from nanoray._core import _runtime as _rt

_KIND = {1: "driver", 2: "worker", 3: "actor"}
_STATE = {1: "starting", 2: "idle", 3: "running", 4: "blocked in get", 5: "exited"}


def _regions():
    """One Region per runtime found (deduplicated by session), and the pids
    of processes holding a region of another nanoray version."""
    seen, out, other = set(), [], set()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = "/proc/%s/fd" % entry
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if not os.readlink(os.path.join(fd_dir, fd)).startswith("/memfd:nanoray"):
                    continue
                own = os.open(os.path.join(fd_dir, fd), os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                region = _rt.Region.attach(own)
            except OSError:
                os.close(own)
                other.add(int(entry))        # another version's layout
                continue
            if region.session in seen or region.is_shut_down():
                continue
            seen.add(region.session)
            out.append(region)
    return out, other


def _mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def report(region):
    s = region.stats()
    procs = _rt.proc_rows(region)
    tasks = _rt.task_rows(region)
    driver = [p[1] for p in procs if p[2] == 1]
    lines = ["nanoray runtime %016x (driver pid %s)" % (
        region.session, ", ".join(map(str, driver)) or "?")]
    lines.append("  CPUs: %g total, %g available" % (s["cpus_total"], s["cpus_available"]))
    by_state = {}
    for p in procs:
        if p[2] in (2, 3):
            key = (_KIND[p[2]], _STATE.get(p[3], "?"))
            by_state[key] = by_state.get(key, 0) + 1
    for kind in ("worker", "actor"):
        parts = ["%d %s" % (n, st) for (k, st), n in sorted(by_state.items()) if k == kind]
        total = sum(n for (k, _), n in by_state.items() if k == kind)
        lines.append("  %ss: %d%s" % (kind, total, " (%s)" % ", ".join(parts) if parts else ""))
    running = sum(1 for t in tasks if t[2] == 3)
    args = sum(1 for t in tasks if t[2] == 1 and t[8])
    lines.append("  tasks: %d live (%d running, %d queued, %d waiting for arguments); "
                 "%d waiting for resources" % (len(tasks), running, len(tasks) - running - args,
                                               args, s["waiting_for_resources"]))
    lines.append("  store: %s used of %s, %d objects; %d spilled (%s)" % (
        _mib(s["store_used"]), _mib(s["store_capacity"]), s["objects"], s["spilled_objects"],
        _mib(s["spilled_bytes"])))
    return "\n".join(lines)


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _report_within(region, seconds):
    """report(region), or a line saying who holds its lock if that takes
    longer than seconds (a stopped or stuck holder: when a status matters).
    The snapshot is taken in a forked child: a wait for the region lock
    holds the GIL, so no thread of this process could give up on it."""
    import select
    import signal
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: report, then go
        code = 1
        try:
            os.close(r)
            os.write(w, report(region).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        ready, _, _ = select.select([r], [], [], seconds)
        while ready:
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
            ready, _, _ = select.select([r], [], [], seconds)
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    if chunks:
        return b"".join(chunks).decode()
    holder = region.lock_holder()
    state = {"T": "stopped", "t": "stopped by a debugger", "D": "in uninterruptible I/O",
             "Z": "a zombie"}.get(_proc_state(holder), "running") if holder else "?"
    return ("nanoray runtime %016x: its lock has been held for over %g s by pid %s (%s); "
            "no snapshot" % (region.session, seconds, holder or "?", state))


def main(argv):
    regions, other = _regions()
    if not regions:
        print("no nanoray runtime is running (for this user)" if not other else
              "no nanoray runtime of this version is running; processes %s hold one of "
              "another version" % ", ".join(map(str, sorted(other))))
        return 1
    for region in regions:
        print(_report_within(region, 3.0), flush=True)
    return 0
