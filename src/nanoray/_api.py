"""The public functions: init, shutdown, get, put, wait, remote.

Each call goes to one backend object, _backend.  LocalBackend is this
machine's: a region mapped by this process, a zygote that forks the
workers, and the compiled runtime in nanoray._core._runtime.  RayBackend
(nanoray/_ray_backend.py) runs the same calls on Ray: init(address=...),
init(backend="ray") or NANORAY_BACKEND=ray.  Every public call asks the
backend's `remote` flag once; the local path stays a direct call into the
compiled runtime.
"""

import atexit
import errno
import json
import numbers
import os
import shutil
import subprocess
import tempfile
import sys
import threading
import time

from nanoray import _runtime_env, exceptions
from nanoray._core import _runtime as _rt
from nanoray._core._runtime import ObjectRef
# The node's resources (Ray's queries of them are re-exported from here).
from nanoray._node import (_detect_gpus, _resource_totals, available_resources,  # noqa: F401
                           cluster_resources, get_gpu_ids, nodes)

# Workers beyond num_cpus that may exist at once.  A task blocked in get()
# lends its CPU and keeps its process, so nested tasks need extra processes;
# this bounds how many (each idle one retires after 10 s).
EXTRA_WORKERS = 128
# Process slots in the region (driver, workers, later actors).
MAX_PROCS = 1024
TABLE_SIZES = (1 << 22, 1 << 20, 1 << 17)     # tasks and objects, tried in turn
# The object store's default size, as a share of physical memory (Ray's
# default too).  The region is sparse: memory is used only as objects need it.
DEFAULT_STORE_SHARE = 0.3
# Store memory kept allocated ahead of use by a thread of the driver at idle
# priority, so that a large put lands in ready pages (csrc/nr_prefault.h):
# at most this much, and at most this share of the store.  It is memory the
# store holds from then on (the driver's RssShmem).  Set with
# _system_config={"object_store_prefault_bytes": n} or NANORAY_PREFAULT_BYTES;
# 0 turns it off.
PREFAULT_MOST = 512 << 20
PREFAULT_STORE_SHARE = 0.25

# The zygote takes the driver's sys.path before importing nanoray, so it finds
# whatever the driver finds (the package itself, the script's directory).
_ZYGOTE_BOOT = ("import json, os, sys; "
                "sys.path[:] = json.loads(os.environ['NANORAY_ZYGOTE'])['sys_path']; "
                "from nanoray._zygote import main; main()")

_backend = None
_lock = threading.RLock()
_atexit_registered = False


class LocalBackend:
    """One machine: the shared region, the zygote and its workers."""

    remote = False                 # RayBackend's is True

    def __init__(self, region, num_cpus, zygote=None, death_fd=-1, spawn_fd=-1,
                 namespace=None):
        self.region = region
        self.namespace = namespace or "default"  # where named actors are looked up
        self.num_cpus = num_cpus
        self.zygote = zygote
        self.death_fd = death_fd
        self.spawn_fd = spawn_fd
        self.pid = os.getpid()      # the process that started it (a forked child is not)

    @classmethod
    def start(cls, num_cpus, object_store_memory, max_workers=None, namespace=None,
              spill_base=None, runtime_env=None, resources=None, log_to_driver=True,
              born_in_shm=True, prefault_bytes=0, logging=None):
        floor, most = worker_limits(num_cpus, max_workers)
        # Four million tasks and objects; smaller tables where the address
        # space is limited (ulimit -v): the region maps them all.
        for n in TABLE_SIZES:
            try:
                region = _rt.Region.create(
                    object_store_memory, int(round(num_cpus * 1000)), min_workers=floor,
                    max_workers=most, max_procs=MAX_PROCS, max_objects=n, max_tasks=n,
                    max_deps=2 * n)
                break
            except OSError as e:
                if e.errno != errno.ENOMEM or n == TABLE_SIZES[-1]:
                    raise
        if n != TABLE_SIZES[0]:
            import warnings
            warnings.warn("nanoray: the address space limit (ulimit -v) leaves room for "
                          "%d tasks and %d objects alive at once, not %d" % (n, n, TABLE_SIZES[0]),
                          RuntimeWarning, stacklevel=4)
        if prefault_bytes > 0:
            try:
                region.prefault_start(prefault_bytes)   # uses the CPUs start-up leaves idle
            except OSError:
                pass                                   # only slower first puts
        _rt.define_resources(region, resources or {})
        # Created by the first process that spills; removed at shutdown, or by
        # the zygote if the driver dies.
        _rt.set_spill_dir(region, os.path.join(
            spill_base or tempfile.gettempdir(),
            "nanoray-spill-%d-%016x" % (os.getpid(), region.session)))
        slot = region.proc_alloc(1)                    # NR_KIND_DRIVER
        region.proc_started(slot, os.getpid())
        spawn_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        death_r, death_w = os.pipe()
        env_vars, workdir, paths = _runtime_env.for_zygote(runtime_env)
        cfg = {
            "driver_pid": os.getpid(), "region_fd": region.fd, "death_fd": death_r,
            "spawn_fd": spawn_fd, "sys_path": paths + [os.path.abspath(p) if p else os.getcwd()
                                                       for p in sys.path],
            "preload": ["numpy"] if "numpy" in sys.modules else [],
            "namespace": namespace,
            "log_to_driver": bool(log_to_driver),
            "logging": logging,                      # LoggingConfig._spec(), or None
            # What get_runtime_context() reports in workers: the env_vars'
            # values are in the zygote's environment already (one string of
            # the environment holds at most 128 KiB: not twice).
            "runtime_env": runtime_env and dict(
                runtime_env, **({"env_vars": sorted(runtime_env["env_vars"])}
                                if "env_vars" in runtime_env else {})),
        }
        env = dict(os.environ, **env_vars)
        env["NANORAY_ZYGOTE"] = json.dumps(cfg)
        if not born_in_shm:                  # workers' arrays are not born in the arena
            env["NANORAY_BORN_IN_SHM"] = "0"
        try:
            zygote = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE_BOOT], env=env, stdin=subprocess.DEVNULL,
                cwd=workdir,
                pass_fds=(region.fd, death_r, spawn_fd), start_new_session=True, close_fds=True)
        except BaseException:
            os.close(death_w)
            os.close(spawn_fd)
            raise
        finally:
            os.close(death_r)
        region.set_spawn_fd(spawn_fd)
        _rt.set_process_state(region, slot)
        return cls(region, num_cpus, zygote, death_w, spawn_fd, namespace=namespace)

    def check_alive(self):
        if self.zygote is not None and self.zygote.poll() is not None:
            raise exceptions.RaySystemError(
                "nanoray's worker pool exited unexpectedly (exit code %s)" % self.zygote.returncode)

    def stop(self):
        region = self.region
        region.prefault_stop()                         # joined: no thread is left behind
        region.shutdown()                              # every waiter returns
        self._close_death_fd()                         # the zygote ends its workers and exits
        if self.zygote is not None:
            try:
                self.zygote.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.zygote.kill()                     # workers follow (parent-death signal)
                self.zygote.wait()
        if self.spawn_fd >= 0:
            os.close(self.spawn_fd)
            self.spawn_fd = -1
        remove_spill_dir(region)
        self._close_local()

    def leave_forked(self):
        """In a child forked from the process that started the runtime: lets
        go of this process's copies of its descriptors and state, leaving the
        runtime (the parent's) running."""
        self.zygote = None                             # not this process's child
        self.region.prefault_stop()                    # a no-op: fork does not copy threads
        self._close_death_fd()
        if self.spawn_fd >= 0:
            os.close(self.spawn_fd)
            self.spawn_fd = -1
        self._close_local()

    def _close_death_fd(self):
        if self.death_fd >= 0:
            try:
                os.close(self.death_fd)
            except OSError:
                pass
            self.death_fd = -1

    def _close_local(self):
        region = self.region
        region.set_spawn_fd(-1)
        region.close_fd()                              # the mapping lives while refs/views do
        _rt.set_process_state(None, 0)


def _spill_base(directory, system_config):
    """The directory spilled objects go under, from init's arguments."""
    if directory is None and system_config:
        cfg = system_config.get("object_spilling_config")
        if cfg:
            if isinstance(cfg, str):
                cfg = json.loads(cfg)
            if cfg.get("type", "filesystem") != "filesystem":
                raise ValueError("nanoray spills to the local filesystem only, not %r"
                                 % (cfg.get("type"),))
            directory = (cfg.get("params") or {}).get("directory_path")
            if isinstance(directory, (list, tuple)):
                directory = directory[0] if directory else None
    if directory is None:
        return None
    directory = os.fspath(directory)
    if not isinstance(directory, str):
        directory = os.fsdecode(directory)
    return os.path.abspath(directory)


def _prefault_bytes(system_config, object_store_memory):
    """How far ahead of use the store keeps memory ready (PREFAULT_MOST)."""
    n = (system_config or {}).get("object_store_prefault_bytes")
    if n is None:
        n = os.environ.get("NANORAY_PREFAULT_BYTES")
    if n is None:
        return min(PREFAULT_MOST, int(object_store_memory * PREFAULT_STORE_SHARE))
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ValueError("object_store_prefault_bytes must be an int >= 0, got %r" % (n,))
    if n < 0:
        raise ValueError("object_store_prefault_bytes must be an int >= 0, got %r" % (n,))
    return min(n, object_store_memory)


def remove_spill_dir(region):
    """Removes the runtime's spill files (and its directory)."""
    path = _rt.spill_dir(region)
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def worker_limits(num_cpus, max_workers=None):
    """(workers kept alive, workers at most) for init's arguments."""
    floor = max(1, int(num_cpus))
    limit = MAX_PROCS - 2                      # the driver's slot, and one spare
    most = max(floor, max_workers or min(floor + EXTRA_WORKERS, limit))
    if most > limit:
        raise ValueError("nanoray runs at most %d worker processes; num_cpus=%r and "
                         "_max_workers=%r ask for %d" % (limit, num_cpus, max_workers, most))
    return floor, most


def _become_worker(region, slot, namespace=None):
    """Called in a freshly forked worker: the API now talks to this region."""
    global _backend
    _backend = LocalBackend(region, None, namespace=namespace)
    _rt.set_process_state(region, slot)
    _rt.set_liveness_check(None)


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def init(num_cpus=None, object_store_memory=None, ignore_reinit_error=False, *,
         address=None, num_gpus=None, resources=None, memory=None, namespace=None,
         runtime_env=None,
         include_dashboard=None, dashboard_port=None, dashboard_host=None,
         logging_level=None, log_to_driver=True,
         configure_logging=True, object_spilling_directory=None, _system_config=None,
         _max_workers=None, backend=None, **kwargs):
    """Starts nanoray on this machine: the object store and num_cpus workers.

    Returns quickly: workers are forked by a zygote process while the first
    tasks are being submitted.  _max_workers bounds the worker processes,
    those started for tasks blocked in get() included (default num_cpus +
    EXTRA_WORKERS).

    When the store is full, objects nothing has mapped are spilled to files
    under object_spilling_directory (default: the temporary directory; also
    read from Ray's _system_config={"object_spilling_config": ...}), in a
    directory of this runtime's own that is removed at shutdown.

    In workers, numpy arrays of at least 1 MiB are allocated in the store
    (numpy's allocator hook, NEP 49), so a task that returns (or puts) one
    stores it without a copy; _system_config={"born_in_shm": False} turns
    that off (the copy path; nanoray/_core/rt/born.pyx, csrc/nr_born.h).

    What workers print reaches this process's stdout and stderr, each line
    prefixed as Ray does ("(f pid=1234) "); log_to_driver=False silences
    them (nanoray/_output.py).

    include_dashboard=True serves a live page of workers, tasks, actors,
    store use and a timeline on 127.0.0.1 (port 8265, or a free one when
    taken; dashboard_port= picks it): the returned context's dashboard_url
    (nanoray/_dashboard.py).  None and False start nothing.

    Ray's other arguments (job_config.RAY_ONLY_INIT: labels, job_config,
    logging_config, _temp_dir, ...) are accepted; a job_config's runtime_env
    and namespace apply where init() gives none.

    address (a Ray cluster: "auto", "ray://host:port", "host:port"; also
    as the first argument, as Ray takes it) runs
    every call on that cluster; backend="ray", or NANORAY_BACKEND=ray in
    the environment, starts a local Ray for them (nanoray/_ray_backend.py;
    needs `pip install 'nanoray[ray]'`)."""
    global _backend, _atexit_registered
    from nanoray.job_config import ray_only_args
    ray_only, runtime_env, namespace = ray_only_args(kwargs, runtime_env, namespace)
    if kwargs:
        raise TypeError("init() got unexpected keyword argument(s): %s" % ", ".join(sorted(kwargs)))
    if isinstance(num_cpus, str) and (num_cpus in ("auto", "local") or ":" in num_cpus):
        address, num_cpus = num_cpus, None   # Ray's first argument: init("auto")
    with _lock:
        if _backend is not None:
            if ignore_reinit_error:
                return _context()
            raise RuntimeError("Maybe you called nanoray.init twice by accident? This error can "
                               "be suppressed by passing ignore_reinit_error=True or by calling "
                               "nanoray.shutdown() prior to nanoray.init().")
        if backend is None:
            backend = os.environ.get("NANORAY_BACKEND") or "local"
        if backend not in ("local", "ray"):
            raise ValueError("backend must be \"local\" or \"ray\", got %r" % (backend,))
        if address not in (None, "local") or backend == "ray":
            if _max_workers is not None:
                raise ValueError("_max_workers is nanoray's own: Ray's workers are Ray's")
            if object_spilling_directory is not None:
                _system_config = dict(_system_config or {}, object_spilling_config=json.dumps(
                    {"type": "filesystem",
                     "params": {"directory_path": object_spilling_directory}}))
            from nanoray._ray_backend import RayBackend, import_ray
            if address == "auto" and backend != "ray":
                try:
                    import_ray()
                except ImportError as e:
                    # As Ray says it when no cluster runs: programs fall back
                    # to a local runtime on `except ConnectionError`.
                    raise ConnectionError("Could not find any running Ray instance for "
                                          "address='auto': %s" % e) from None
            _backend = RayBackend.start(address, dict(
                num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, memory=memory,
                object_store_memory=object_store_memory, namespace=namespace,
                runtime_env=runtime_env, include_dashboard=include_dashboard,
                dashboard_port=dashboard_port, dashboard_host=dashboard_host,
                logging_level=logging_level, log_to_driver=log_to_driver,
                configure_logging=configure_logging, _system_config=_system_config,
                **ray_only))
            if not _atexit_registered:
                atexit.register(shutdown)
                _atexit_registered = True
            return _context()
        if num_cpus is None:
            num_cpus = os.cpu_count() or 1
        if not isinstance(num_cpus, (int, float)) or isinstance(num_cpus, bool) or num_cpus <= 0:
            raise ValueError("num_cpus must be a positive number, got %r" % (num_cpus,))
        if object_store_memory is None:
            object_store_memory = int(_physical_memory() * DEFAULT_STORE_SHARE)
        if not isinstance(object_store_memory, int) or object_store_memory < (1 << 20):
            raise ValueError("object_store_memory must be an int of at least 1 MiB, got %r"
                             % (object_store_memory,))
        if _max_workers is not None and (not isinstance(_max_workers, int) or _max_workers < 1):
            raise ValueError("_max_workers must be a positive int, got %r" % (_max_workers,))
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError("namespace must be a str, got %r" % (type(namespace).__name__,))
        spill_base = _spill_base(object_spilling_directory, _system_config)
        env = _runtime_env.validate(runtime_env)
        totals = _resource_totals(num_gpus, resources, memory, object_store_memory)
        born = (_system_config or {}).get("born_in_shm", True)
        logging_config = ray_only.get("logging_config")
        spec = logging_config._spec() if hasattr(logging_config, "_spec") else None
        _backend = LocalBackend.start(num_cpus, object_store_memory, _max_workers, namespace,
                                      spill_base, env, totals, log_to_driver, bool(born),
                                      _prefault_bytes(_system_config, object_store_memory),
                                      spec)
        if spec is not None:
            from nanoray.job_config import configure_logging
            configure_logging(spec)
        _runtime_env.job = env                   # what get_runtime_context() reports
        _rt.set_liveness_check(_backend.check_alive)
        bars = sys.modules.get("nanoray.experimental.tqdm_ray")
        if bars is not None:
            bars._driver_started()           # listen for the tqdm_ray bars of tasks
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        exceptions._install_read_only_hint()   # a write to an array from get(): the way out
        if include_dashboard:
            from nanoray import _dashboard
            try:
                _dashboard.start(dashboard_port, dashboard_host)
            except BaseException:
                shutdown()
                raise
        return _context()


def _context():
    from nanoray import _context as ctx
    if _backend.remote:
        return _backend.context(ctx.RayContext)
    return ctx.context(_backend.num_cpus)


def shutdown(_exiting_interpreter=False):
    """Stops every worker and releases the store; a no-op when not started.

    In a child forked from the process that called init() (its exit runs
    this too, through atexit), it only lets go of the child's copies: the
    runtime is the parent's, and keeps running."""
    global _backend
    dashboard = sys.modules.get("nanoray._dashboard")
    if dashboard is not None:
        dashboard.stop()                               # its requests end while the runtime runs
    with _lock:
        b = _backend
        if b is None:
            return
        if b.remote:
            _backend = None
            b.stop()
            return
        if b.pid != os.getpid():
            _backend = None
            _rt.set_liveness_check(None)
            b.leave_forked()
        elif b.zygote is None:
            return                                     # a worker: the runtime is not its own
        else:
            _backend = None
            _rt.set_liveness_check(None)
            _runtime_env.job = None
            b.stop()
            bars = sys.modules.get("nanoray.experimental.tqdm_ray")
            if bars is not None:
                bars._driver_stopped()       # after the workers: what they sent is all in
    # What nanoray itself caches must not keep the store mapped after shutdown.
    from nanoray import remote_function
    remote_function.forget_exports()


def _after_fork_in_child():
    """A forked child must not hold the death pipe's write end: the zygote
    ends the runtime when every copy of it is closed, so a child that
    outlives its parent would keep the workers alive.  Its lock may have
    been held by another thread of the parent, gone in the child."""
    global _lock
    _lock = threading.RLock()
    b = _backend
    if b is not None and not b.remote and b.pid != os.getpid():
        b._close_death_fd()


os.register_at_fork(after_in_child=_after_fork_in_child)


def is_initialized():
    return _backend is not None


def _auto_init():
    with _lock:
        if _backend is None:
            init()
        return _backend


def _get_backend():
    b = _backend
    return b if b is not None else _auto_init()


def put(value, *, _owner=None):
    """Stores value in the shared object store; returns its ObjectRef."""
    b = _backend or _auto_init()
    if b.remote:
        return b.put(value)
    return _rt.put(value)


def get(object_refs, *, timeout=None, progress=False, writable=False):
    """Blocks until the value(s) are available; returns them.

    A list of refs gives a list of values in the same order.  Arrays come
    back as read-only views of shared memory (no copy).  Raises the task's
    exception (RayTaskError, also an instance of the original type), or
    GetTimeoutError when timeout (seconds) passes first; a negative timeout
    waits forever, as in Ray.  progress=True (or a label) draws a progress
    bar while a list of refs completes (nanoray/_progress.py).

    writable=True gives arrays as writable copy-on-write views instead: the
    stored bytes are mapped privately, so reading costs nothing, only the
    pages written are copied, and the writes are seen by this process
    alone (the stored object never changes)."""
    b = _backend or _auto_init()
    if type(object_refs) is ObjectRef:
        return _rt.get_one(object_refs, timeout, writable)
    if b.remote and isinstance(object_refs, (ObjectRef, list, tuple)):
        if progress and isinstance(object_refs, (list, tuple)) and object_refs:
            _progress_get(object_refs, timeout, progress)
        return b.get(object_refs, timeout, writable)
    if isinstance(object_refs, (list, tuple)):
        for r in object_refs:
            if type(r) is not ObjectRef:
                raise ValueError("'object_refs' must either be an ObjectRef or a list of "
                                 "ObjectRefs, found %r in the list" % (type(r).__name__,))
        if progress and object_refs:
            _progress_get(object_refs, timeout, progress)
        return _rt.get(object_refs, timeout, writable)
    raise ValueError("'object_refs' must either be an ObjectRef or a list of ObjectRefs, got %r"
                     % (type(object_refs).__name__,))


def _progress_get(object_refs, timeout, progress):
    """get(progress=...): a bar while the refs complete (then get reads them)."""
    from nanoray import _progress
    unique = list(dict.fromkeys(object_refs))
    t = None if timeout is None or timeout < 0 else timeout
    ready, _ = _progress.wait_with_bar(unique, len(unique), t,
                                       _progress.label(progress, "get"), wait)
    if len(ready) < len(unique):
        from nanoray.exceptions import GetTimeoutError
        raise GetTimeoutError("Get timed out: some object(s) not ready.")


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True, progress=False):
    """Returns (ready, not_ready): the first num_returns refs that are ready,
    in input order, once that many are ready or timeout passes.
    progress=True (or a label) draws a bar of the refs ready so far."""
    b = _backend or _auto_init()
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expected a list of ObjectRef, got a single ObjectRef")
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError("wait() expected a list of ObjectRef, got %r" % (type(object_refs).__name__,))
    refs = list(object_refs)
    generators = False
    for r in refs:
        if type(r) is not ObjectRef:
            if not isinstance(r, (ObjectRef, _ObjectRefGenerator())):
                raise TypeError("wait() expected a list of ObjectRef or ObjectRefGenerator, "
                                "found %r" % (type(r).__name__,))
            generators = True
    if len(set(refs)) != len(refs):
        raise ValueError("Wait requires a list of unique object refs.")
    if not refs:
        return [], []
    if not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError("Invalid number of objects to return %r." % (num_returns,))
    if num_returns > len(refs):
        raise ValueError("num_returns cannot be greater than the number of objects provided "
                         "to wait.")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise TypeError("timeout must be a number of seconds or None, got %r"
                            % (type(timeout).__name__,))
        if not timeout >= 0:                       # negative or nan
            raise ValueError("timeout must be None or >= 0, got %r" % (timeout,))
    if progress and not generators:
        from nanoray import _progress
        return _progress.wait_with_bar(refs, num_returns, timeout,
                                       _progress.label(progress, "wait"), wait)
    if b.remote:
        return b.wait(refs, num_returns, timeout, fetch_local)
    if generators:
        idx = _wait_generators(refs, num_returns, timeout)
    else:
        idx = _rt.wait(refs, num_returns, timeout)
    chosen = set(idx)
    return [refs[i] for i in idx], [r for i, r in enumerate(refs) if i not in chosen]


def _ObjectRefGenerator():
    from nanoray._generator import ObjectRefGenerator
    return ObjectRefGenerator


def _wait_generators(items, num_returns, timeout):
    """wait() over refs and generators: a generator is ready when its next
    item is (or it has finished)."""
    finished = []
    waiting = []                   # (index in items, ref to wait on)
    for i, x in enumerate(items):
        ref = x if type(x) is ObjectRef else x._ready_ref()
        if ref is None:
            finished.append(i)
        else:
            waiting.append((i, ref))
    want = num_returns - len(finished)
    if want <= 0:
        return finished[:num_returns]
    refs = [ref for _, ref in waiting]
    if len(set(refs)) != len(refs):
        raise ValueError("Wait requires a list of unique object refs.")
    got = _rt.wait(refs, min(want, len(refs)), timeout)
    return sorted(finished + [waiting[j][0] for j in got])[:num_returns]


def cancel(ref, *, force=False, recursive=True):
    """Cancels the task that returns ref (or an ObjectRefGenerator's task).

    A task that has not started never runs; a running one gets
    KeyboardInterrupt in its own code (force=True kills its worker
    instead); either way get() raises TaskCancelledError, and the task is
    not retried.  With recursive (the default) the tasks it submitted are
    cancelled too.  A running call of an async actor is cancelled (its
    asyncio.Task gets CancelledError); one of a sync or threaded actor is
    not interrupted, and can look at get_runtime_context().is_canceled().
    Cancelling a finished task does nothing."""
    b = _get_backend()
    if type(ref) is not ObjectRef:
        if not isinstance(ref, (ObjectRef, _ObjectRefGenerator())):
            raise TypeError("nanoray.cancel() only supports ObjectRefs (or an "
                            "ObjectRefGenerator), got %r" % (type(ref).__name__,))
        if b.remote:
            return b.cancel(ref, bool(force), bool(recursive))
        if ref._task:                            # () or None: finished when it was made
            _rt.cancel_task(ref._task, bool(force), bool(recursive))
        return
    _rt.cancel(ref, bool(force), bool(recursive))


def timeline(filename=None):
    """Ray's timeline: every recent task and actor call (the newest 131072)
    as Chrome trace events, one row per process; written as JSON to
    filename (open it in Perfetto or chrome://tracing), else returned."""
    b = _get_backend()
    if b.remote:
        return b.ray.timeline(filename)
    from nanoray import _timeline
    return _timeline.timeline(filename)
