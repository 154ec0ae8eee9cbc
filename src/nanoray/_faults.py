"""Fault injection for nanoray's tests and benchmarks: killing workers at
random, and inside critical sections on purpose."""

import mmap
import os
import random
import signal
import struct
import select
import time


def _stopped(pid, timeout=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
        except OSError:
            return False
        if st[st.rindex(")") + 2] in "Tt":
            return True
    return False


class Killer:
    """SIGKILLs a worker every `every` seconds (jittered) until stopped: half
    the time a random one; half the time one caught holding the region's
    lock, stopped there (SIGSTOP) and killed only if it still holds it, so
    the kill lands inside a critical section.

    It runs in a forked process of its own: while a worker is stopped
    holding the lock, any thread of this process may block on that lock
    holding the GIL, and a killer thread here could then never finish the
    job.  The child only reads the region and sends signals.

    progress: a kill waits until at least that many tasks have finished
    since the previous one.  A fixed kill rate alone stops all progress once
    tasks take longer than `every` (a loaded machine runs them several times
    slower), and the test then measures the machine, not the runtime."""

    def __init__(self, region, every, seed, progress=0):
        self.region, self.every, self.seed = region, every, seed
        self.progress = progress
        self._counts = mmap.mmap(-1, 16)            # shared with the child: kills, in section
        self.pid = None

    @property
    def kills(self):
        return struct.unpack_from("QQ", self._counts)[0]

    @property
    def in_section(self):
        return struct.unpack_from("QQ", self._counts)[1]

    def _aim(self, pids):
        for _ in range(50):
            for _ in range(20000):                  # watch the lock for a moment
                holder = self.region.lock_holder()
                if holder in pids:
                    break
            else:
                return None
            try:
                os.kill(holder, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            if _stopped(holder) and self.region.lock_holder() == holder:
                return holder                       # frozen inside a section
            try:
                os.kill(holder, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return None

    def _run(self, stop_fd):
        rng = random.Random(self.seed)
        kills = in_section = 0
        done_at_kill = self.region.tasks_finished()
        while not select.select([stop_fd], [], [], self.every * rng.uniform(0.3, 1.7))[0]:
            if self.region.tasks_finished() - done_at_kill < self.progress:
                continue
            pids = self.region.worker_pids()
            if not pids:
                continue
            victim = self._aim(pids) if rng.random() < 0.5 else None
            try:
                os.kill(victim or rng.choice(pids), signal.SIGKILL)
                done_at_kill = self.region.tasks_finished()
                kills += 1
                in_section += victim is not None
                struct.pack_into("QQ", self._counts, 0, kills, in_section)
            except ProcessLookupError:
                pass

    def __enter__(self):
        stop_r, self._stop_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self._stop_w)
                self._run(stop_r)
                code = 0
            finally:
                os._exit(code)
        os.close(stop_r)
        return self

    def __exit__(self, *exc):
        os.close(self._stop_w)                      # the child stops at its next turn
        os.waitpid(self.pid, 0)


def nested_workload(ray):
    """(parent, expect): parent(i) fans out to four leaf tasks with array
    arguments, puts a ref it returns nested in its result, and gets its
    children (a nested get); expect(i) is the total it must return.  Every
    task may be retried forever, so under kills each result must still be
    exact."""
    import numpy as np

    @ray.remote(max_retries=-1)
    def leaf(i, arr):
        return arr * i

    @ray.remote(max_retries=-1)
    def parent(i):
        kids = [leaf.remote(4 * i + j, np.arange(64)) for j in range(4)]
        inner = ray.put(np.full(256, i))
        return sum(int(v.sum()) for v in ray.get(kids)), [inner]

    def expect(i):
        return sum((4 * i + j) * (63 * 64 // 2) for j in range(4))

    return parent, expect
