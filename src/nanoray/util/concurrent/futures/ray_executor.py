"""A concurrent.futures.Executor whose calls run as nanoray tasks.

submit() returns a concurrent.futures.Future at once; the call is a task
(2-3 us of overhead here, against ~100 us for ProcessPoolExecutor), so
its arguments and result pass through the shared store (numpy arrays
without a copy).  The futures work with concurrent.futures.wait and
as_completed, and with asyncio.wrap_future.

- max_workers: at most that many calls run at once (default: the CPUs
  nanoray has); calls beyond it wait in the executor, in order.
- initializer(*initargs) runs once in each worker process, before the first
  call of this executor that the process runs.
- Future.cancel() succeeds while the call has not started: the task is
  cancelled in the scheduler and never runs.  shutdown(cancel_futures=True)
  cancels every call not started.
- map(fn, *iterables, timeout=, chunksize=) sends chunksize calls per task
  and yields results in order; timeout counts from the map() call, as in
  the stdlib.
- An exception raised by the call is set on its future as that exception
  (the remote traceback chained as __cause__); a task whose worker died
  sets nanoray's WorkerCrashedError.
"""

import collections
import concurrent.futures as _cf
import itertools
import threading
import time
import types
import weakref

import nanoray
from nanoray import exceptions
from nanoray.util._collector import collect

__all__ = ["RayExecutor"]

_inited = set()          # in a worker process: executors whose initializer ran here


def _task_for(fn, key, init, chunked):
    """The function a call of fn runs as: fn itself, after the executor's
    initializer on its first call in a process; for map's chunks, fn over
    a list of argument tuples."""
    def call(*args, **kwargs):
        if init is not None and key not in _inited:
            init[0](*init[1])
            _inited.add(key)
        if chunked:
            return [fn(*a) for a in args[0]]
        return fn(*args, **kwargs)
    call.__name__ = call.__qualname__ = getattr(fn, "__name__", "call")
    return call


class _Future(_cf.Future):
    """A Future whose cancel() also cancels its task, if it has not started."""

    def __init__(self, executor):
        super().__init__()
        self._executor = executor
        self._ref = None

    def cancel(self):
        # A future stays PENDING until its result is in (its task may not
        # have started): cancel() asks the scheduler whether it has.
        with self._condition:
            if self._state != "PENDING":
                return self._state in ("CANCELLED", "CANCELLED_AND_NOTIFIED")
        if not self._executor._unstart(self):
            return False
        with self._condition:                    # one step, as _settle's
            if self._state != "PENDING":
                return self._state in ("CANCELLED", "CANCELLED_AND_NOTIFIED")
            super().cancel()
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        return True

    def _help(self, timeout):
        """Waits for the task in the calling thread, and delivers it: no
        hand-off through the collector thread (two thread wake-ups a call).
        Returns the timeout left for the base class's wait."""
        ref = self._ref
        if ref is None or self._state != "PENDING":
            return timeout
        try:
            ready, _ = nanoray.wait([ref], timeout=timeout)
        except Exception as e:                  # the runtime went away
            self._executor._fail_all(e)
            return timeout
        if ready:
            self._executor._deliver(ref)
            return timeout
        return 0                                # timed out already

    def result(self, timeout=None):
        return super().result(self._help(timeout))

    def exception(self, timeout=None):
        return super().exception(self._help(timeout))


class RayExecutor(_cf.Executor):
    """concurrent.futures.Executor over nanoray tasks (see the module doc)."""

    def __init__(self, max_workers=None, initializer=None, initargs=(), shutdown_ray=None,
                 ray_remote_args=None, **kwargs):
        if max_workers is None:
            max_workers = max(1, int(nanoray.cluster_resources().get("CPU", 1)))
        if not isinstance(max_workers, int) or max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._opts = dict(ray_remote_args or {})
        # fn -> its remote function, exported once (a call then sends only
        # its arguments; workers keep the function loaded).
        self._remotes = collections.OrderedDict()
        self._max_workers = max_workers
        self._init = None if initializer is None else (initializer, tuple(initargs))
        self._key = "%x-%x" % (id(self), int(time.monotonic_ns()))
        self._shutdown_ray = bool(shutdown_ray)
        self._lock = threading.Condition()
        self._queue = collections.deque()       # futures waiting for a turn
        self._running = {}                      # ref -> future
        self._shutdown = False
        self._thread = None

    def submit(self, fn, /, *args, **kwargs):
        return self._submit(fn, False, args, kwargs)

    def _remote(self, fn, chunked):
        """fn's remote function (under the lock).  Functions keep theirs (the
        last 64 used); other callables, which may carry data, get one each
        call, not kept."""
        plain = isinstance(fn, (types.FunctionType, types.BuiltinFunctionType))
        rf = self._remotes.get((fn, chunked)) if plain else None
        if rf is None:
            rf = nanoray.remote(_task_for(fn, self._key, self._init, chunked))
            if self._opts:
                rf = rf.options(**self._opts)
            if plain:
                self._remotes[(fn, chunked)] = rf
                if len(self._remotes) > 64:
                    self._remotes.popitem(last=False)
        return rf

    def _submit(self, fn, chunked, args, kwargs):
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not callable(fn):
                raise TypeError("%r is not callable" % (fn,))
            fut = _Future(self)
            fut._call = (self._remote(fn, chunked), args, kwargs)
            self._queue.append(fut)
            self._start()
            if self._thread is None:          # it holds the executor weakly, as the stdlib's
                self._thread = threading.Thread(target=collect,
                                                args=(weakref.ref(self), self._lock),
                                                daemon=True, name="nanoray-executor")
                self._thread.start()
            self._lock.notify_all()
        return fut

    def _start(self):
        """Starts queued calls while fewer than max_workers run (under the lock)."""
        while self._queue and len(self._running) < self._max_workers:
            fut = self._queue.popleft()
            if fut.done():
                continue
            remote_fn, args, kwargs = fut._call
            del fut._call
            try:
                ref = remote_fn.remote(*args, **kwargs)
            except BaseException as e:
                _settle(fut, None, e)
                continue
            fut._ref = ref
            self._running[ref] = fut

    def _unstart(self, fut):
        """Future.cancel(): True if its call will never run."""
        with self._lock:
            if fut in self._queue:
                self._queue.remove(fut)
                return True
            ref = fut._ref
        return False if ref is None else _cancel_unstarted(ref)

    def _in_flight(self):
        """For the executor's thread (locked): what to wait for; None to end."""
        if not self._running and self._shutdown and not self._queue:
            return None
        return list(self._running)

    def _runtime_gone(self, e):
        self._fail_all(e)
        return False                           # later calls start a new runtime

    def _fail_all(self, e):
        """The runtime went away: every call not done fails, none is lost."""
        err = exceptions.RaySystemError("nanoray stopped before this call finished: %s"
                                        % (exceptions._safe_repr(e),))
        with self._lock:
            futs = list(self._running.values()) + list(self._queue)
            self._running.clear()
            self._queue.clear()
        for fut in futs:
            _settle(fut, None, err)

    def _deliver(self, ref):
        """Delivers a finished call to its future; whichever thread sees it
        first (the collector, or a caller blocked in result()) does it."""
        with self._lock:
            fut = self._running.pop(ref, None)
            self._start()
        if fut is None:
            return
        try:
            value = nanoray.get(ref)
        except exceptions.TaskCancelledError:
            value, error = None, _cf.CancelledError()
        except BaseException as e:
            value, error = None, exceptions._as_stdlib(e)
        else:
            error = None
        _settle(fut, value, error)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        it = zip(*iterables)
        if chunksize == 1:
            futs = [self.submit(fn, *args) for args in it]
        else:
            futs = []
            while True:
                chunk = list(itertools.islice(it, chunksize))
                if not chunk:
                    break
                futs.append(self._submit(fn, True, (chunk,), {}))

        def results():
            try:
                futs.reverse()
                while futs:
                    f = futs.pop()
                    left = None if end is None else end - time.monotonic()
                    v = f.result(left)
                    if chunksize == 1:
                        yield v
                    else:
                        yield from v
            finally:
                for f in futs:
                    f.cancel()
        return results()

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            self._shutdown = True
            queued = list(self._queue) if cancel_futures else []
            running = list(self._running.values()) if cancel_futures else []
            thread = self._thread
            self._lock.notify_all()
        for fut in queued:
            fut.cancel()
        for fut in running:
            fut.cancel()                       # those not started yet never do
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._shutdown_ray and wait:
            nanoray.shutdown()


def _settle(fut, value, error):
    """The call's outcome onto its future, unless it was cancelled: the
    state changes in one step under the future's lock (cancel() takes it too)."""
    with fut._condition:
        if fut._state != "PENDING":
            return
        if isinstance(error, _cf.CancelledError):   # its task was cancelled as it started
            _cf.Future.cancel(fut)
            fut.set_running_or_notify_cancel()
            return
        fut.set_running_or_notify_cancel()           # PENDING -> RUNNING
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


def _cancel_unstarted(ref):
    from nanoray._core import _runtime as _rt
    try:
        return _rt.cancel_unstarted(ref)
    except Exception:
        return False
