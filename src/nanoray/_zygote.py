"""The zygote: a small clean process that forks workers on demand.

The driver starts it at init() as a fresh interpreter, passing
the region's memfd, the read end of a pipe whose write end only the driver
holds (EOF = the driver is gone, however it died), and an eventfd that any
process pokes when runnable work has CPUs but no worker to run it.

    driver ──Popen──► zygote ──fork──► worker 1 … N   (and more on demand)
      │ death pipe ───►│◄── eventfd pokes (driver, workers)
      │                │◄── SIGCHLD: a worker died → retry or fail its task,
      │                │             start a replacement; an actor died → fork
      │                │             it again (max_restarts) or fail its calls
      │                └──fork──► actor processes (a spawn request names the slot,
      │                           whose kind says worker or actor)
      └─ shared region: every process maps the same memfd

Workers are forked from here, not from the driver, so they never inherit
the driver's threads, locks or large heap.  Each worker sets
PR_SET_PDEATHSIG, so it dies with the zygote; the zygote SIGKILLs its
workers and exits when the death pipe reports EOF.

The zygote itself does not set PR_SET_PDEATHSIG: the kernel sends it when
the *thread* that forked the process exits, and the driver may start
nanoray from a pool or handler thread that ends long before the program.
The death pipe is tied to the driver process instead: its write end is
close-on-exec and closed in children the driver forks (nanoray._api), so
EOF comes exactly when the driver is gone, however it died.

The store's descriptors (the region's memfd, the spawn eventfd) are
close-on-exec here, hence in every worker: fork keeps them, but a program
that a task runs (os.system, subprocess) does not hold the store.

A fork that fails (ENOMEM, EAGAIN) gives its slot back to the region and is
retried after a short, growing delay (Spawner): the request is not lost
and the processes already running are not affected.
"""

import json
import os
import select
import signal
import sys
import time
import traceback

ACTOR = 3                                            # NR_KIND_ACTOR
# After a failed fork, the next try waits this long, doubling up to the
# most: short enough that work resumes soon after memory or process slots
# free up, long enough not to spin while they do not.
SPAWN_RETRY_FIRST_S = 0.05
SPAWN_RETRY_MOST_S = 1.0


class Spawner:
    """Forks a process into each slot the region asks for (spawn_take).

    When a fork fails, that slot and the rest of its batch go back to the
    region (spawn_giveback), which asks for them again; spawn() does nothing
    until the retry time, which poll_timeout_ms() gives the main loop.
    `start(slot)` runs in the child and never returns."""

    def __init__(self, region, start, fork=os.fork, clock=time.monotonic):
        self.region = region
        self.start = start
        self.fork = fork
        self.clock = clock
        self.children = {}                           # pid -> slot
        self.retry_at = None                         # when to try again after a failed fork
        self.delay = SPAWN_RETRY_FIRST_S

    def spawn(self, limit=64):
        if self.retry_at is not None and self.clock() < self.retry_at:
            return
        while True:                  # a full batch may leave more requests (100 actors at once)
            slots = self.region.spawn_take(limit)
            for i, slot in enumerate(slots):
                try:
                    pid = self.fork()
                except OSError as e:
                    for s in slots[i:]:
                        self.region.spawn_giveback(s)
                    self._failed(e)
                    return
                if pid == 0:
                    self.start(slot)
                self.children[pid] = slot
            if len(slots) < limit or limit < 64:
                break
        self.retry_at = None
        self.delay = SPAWN_RETRY_FIRST_S

    def _failed(self, e):
        if self.retry_at is None:
            print("nanoray: cannot start a worker process (%s); retrying" % (e,),
                  file=sys.stderr, flush=True)
        self.retry_at = self.clock() + self.delay
        self.delay = min(self.delay * 2, SPAWN_RETRY_MOST_S)

    def poll_timeout_ms(self):
        """How long the main loop may sleep: None (until an event) unless a
        failed fork waits to be retried."""
        if self.retry_at is None:
            return None
        return max(0, int((self.retry_at - self.clock()) * 1000) + 1)


def main():
    cfg = json.loads(os.environ.pop("NANORAY_ZYGOTE"))
    from nanoray._core import _runtime as rt

    # No parent-death signal here (see above): the death pipe says when the
    # driver is gone, even if it died before this line.
    if os.getppid() != cfg["driver_pid"]:
        os._exit(1)                                  # the driver is already gone
    death_fd, spawn_fd = cfg["death_fd"], cfg["spawn_fd"]
    for fd in (cfg["region_fd"], death_fd, spawn_fd):
        os.set_inheritable(fd, False)                # kept by fork, closed by exec
    region = rt.Region.attach(cfg["region_fd"])
    from nanoray import _runtime_env
    job = cfg.get("runtime_env")                    # get_runtime_context().runtime_env
    if job and "env_vars" in job:                   # names only: the values are here
        job["env_vars"] = {k: os.environ.get(k, "") for k in job["env_vars"]}
    _runtime_env.job = job
    region.set_spawn_fd(spawn_fd)
    rt.set_process_state(region, 0)
    rt.borrow_slot(region)                           # it shares the driver's slot:
    rt.no_spilling()                                 # no small-block cache, no spilling

    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sig_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    zygote_pid = os.getpid()

    def worker_main(slot):
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            rt.install_cancel_handler()              # SIGINT: nanoray.cancel()
            for fd in (sig_r, sig_w, death_fd):
                os.close(fd)
            rt.set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != zygote_pid:
                os._exit(1)
            try:
                sys.stdout.reconfigure(line_buffering=True)
            except Exception:
                pass
            from nanoray import _output
            _output.install(cfg.get("log_to_driver", True), rt.output_name)
            if cfg.get("logging"):                   # init(logging_config=)
                from nanoray.job_config import configure_logging
                configure_logging(cfg["logging"])
            from nanoray import _api
            _api._become_worker(region, slot, cfg.get("namespace"))
            region.proc_started(slot, os.getpid())
            rt.born_setup(region)                    # large arrays: born in the arena
            if region.proc_kind(slot) == ACTOR:
                if rt.actor_loop(region, slot) != 0:  # its last handle is gone, or it died
                    rt.actor_teardown()
            elif rt.worker_loop(region, slot) < 0:
                # Retiring: give back the counts this process holds (the
                # exports its cached functions refer to) before it goes.
                rt.drop_function_cache()
                import gc
                gc.collect()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:
                from nanoray import _output
                _output.flush_all()              # unended lines too
            finally:
                os._exit(code)

    spawner = Spawner(region, worker_main)
    spawn = spawner.spawn
    children = spawner.children                      # pid -> slot

    def lost_task(t):
        # Its process died: run it again if retries remain, else fail it.
        # One that had already returned (died between sealing and finishing)
        # is only released: running it twice would repeat its side effects.
        if rt.task_returned(region, t):
            rt.task_release(region, t)
            return
        if rt.task_retry(region, t):
            return
        from nanoray.exceptions import TaskCancelledError, WorkerCrashedError
        if rt.task_cancelled(region, t):
            # cancel() came while its process was ending (a worker leaving
            # at max_calls to retry it elsewhere, or a crash): not retried.
            err = TaskCancelledError(error_message="nanoray: the task was cancelled")
        else:
            err = WorkerCrashedError(
                "The worker died unexpectedly while executing this task (killed, out of "
                "memory, crashed, or the task called sys.exit()), and no retries were left.")
        for oid in rt.task_returns(region, t):
            if rt.seal_error(oid, err):          # its refs were all dropped: nobody else can
                rt.report_unhandled(err)
        rt.task_release(region, t)

    def reap():
        # The dead child stays a zombie (WNOWAIT) until the region no longer
        # names its pid: until then no new process can take the pid, so a
        # kill() aimed at the actor can never reach a stranger.
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            slot = children.pop(pid, None)
            if slot is not None:
                try:
                    if region.proc_kind(slot) == ACTOR:
                        rt.actor_reap(region, slot)  # restarts it, or fails its calls
                    else:
                        t = rt.proc_reap(region, slot)
                        if t:
                            lost_task(t)
                    if info.si_code != os.CLD_EXITED or info.si_status != 0:
                        rt.sweep_uncounted(region)   # it may have died mid-decref
                except Exception:
                    traceback.print_exc()            # never end the zygote over one reap
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def terminate():
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        try:
            path = rt.spill_dir(region)              # the driver may be gone: its files go,
            if path and os.path.isdir(path):         # once no worker can write more
                import shutil
                shutil.rmtree(path, ignore_errors=True)
        except Exception:
            pass
        os._exit(0)

    # One worker at once, so the first task need not wait; then the modules
    # the driver uses (numpy) are imported here once and the other workers
    # share them, instead of each importing its own copy.
    from nanoray import _threads
    _threads.preset_environment()                    # before numpy loads its BLAS
    preload = cfg.get("preload", ())
    spawn(1 if preload else 64)
    for name in preload:
        try:
            __import__(name)
        except Exception:
            pass
    spawn()

    poller = select.poll()
    poller.register(death_fd, select.POLLIN | select.POLLHUP)
    poller.register(spawn_fd, select.POLLIN)
    poller.register(sig_r, select.POLLIN)
    while True:
        try:
            events = poller.poll(spawner.poll_timeout_ms())
        except InterruptedError:
            events = []
        for fd, _ in events:
            if fd == death_fd:
                terminate()
            elif fd == spawn_fd:
                try:
                    os.eventfd_read(spawn_fd)
                except BlockingIOError:
                    pass
            elif fd == sig_r:
                try:
                    while os.read(sig_r, 512):
                        pass
                except BlockingIOError:
                    pass
        reap()
        if region.is_shut_down():
            terminate()
        spawn()


if __name__ == "__main__":
    main()
