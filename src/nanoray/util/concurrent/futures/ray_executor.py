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

import nanoray
from nanoray import exceptions

__all__ = ["RayExecutor"]

_inited = set()          # in a worker process: executors whose initializer ran here


def _call(key, init, fn, args, kwargs):
    if init is not None and key not in _inited:
        init[0](*init[1])
        _inited.add(key)
    return fn(*args, **kwargs)


def _call_chunk(key, init, fn, chunk):
    if init is not None and key not in _inited:
        init[0](*init[1])
        _inited.add(key)
    return [fn(*args) for args in chunk]


_remote_call = None
_remote_chunk = None


def _unwrap(e):
    if isinstance(e, exceptions.RayTaskError) and isinstance(e.cause, BaseException):
        cause = e.cause
        if e.traceback_str:
            from multiprocessing.pool import RemoteTraceback
            cause.__cause__ = RemoteTraceback(e.traceback_str)
        return cause
    return e


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
        if not self._executor._unstart(self) or not super().cancel():
            return False
        self.set_running_or_notify_cancel()      # wakes wait() and as_completed()
        return True


class RayExecutor(_cf.Executor):
    """concurrent.futures.Executor over nanoray tasks (see the module doc)."""

    def __init__(self, max_workers=None, initializer=None, initargs=(), shutdown_ray=None,
                 ray_remote_args=None, **kwargs):
        global _remote_call, _remote_chunk
        if max_workers is None:
            max_workers = max(1, int(nanoray.cluster_resources().get("CPU", 1)))
        if not isinstance(max_workers, int) or max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if _remote_call is None:
            _remote_call = nanoray.remote(_call)
            _remote_chunk = nanoray.remote(_call_chunk)
        opts = dict(ray_remote_args or {})
        self._call = _remote_call.options(**opts) if opts else _remote_call
        self._chunk = _remote_chunk.options(**opts) if opts else _remote_chunk
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
        return self._submit(self._call, (self._key, self._init, fn, args, kwargs))

    def _submit(self, remote_fn, call_args, wrap=None):
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not callable(call_args[2]):
                raise TypeError("%r is not callable" % (call_args[2],))
            fut = _Future(self)
            fut._call = (remote_fn, call_args)
            self._queue.append(fut)
            self._start()
            if self._thread is None:
                self._thread = threading.Thread(target=self._collect, daemon=True,
                                                name="nanoray-executor")
                self._thread.start()
            self._lock.notify_all()
        return fut

    def _start(self):
        """Starts queued calls while fewer than max_workers run (under the lock)."""
        while self._queue and len(self._running) < self._max_workers:
            fut = self._queue.popleft()
            if fut.done():
                continue
            remote_fn, call_args = fut._call
            del fut._call
            try:
                ref = remote_fn.remote(*call_args)
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

    def _collect(self):
        while True:
            with self._lock:
                while not self._running and not (self._shutdown and not self._queue):
                    self._lock.wait()
                if not self._running:
                    return
                refs = list(self._running)
            try:
                ready, _ = nanoray.wait(refs, num_returns=1, timeout=0.05)
            except Exception:
                return                         # the runtime went away
            for ref in ready:
                with self._lock:
                    fut = self._running.pop(ref, None)
                if fut is None:
                    continue
                try:
                    value = nanoray.get(ref)
                except exceptions.TaskCancelledError:
                    value, error = None, _cf.CancelledError()
                except BaseException as e:
                    value, error = None, _unwrap(e)
                else:
                    error = None
                _settle(fut, value, error)
            with self._lock:
                self._start()

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
                futs.append(self._submit(self._chunk, (self._key, self._init, fn, chunk)))

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
    """The call's outcome onto its (still PENDING) future."""
    try:
        if isinstance(error, _cf.CancelledError):   # its task was cancelled as it started
            _cf.Future.cancel(fut)
            fut.set_running_or_notify_cancel()
        elif fut.set_running_or_notify_cancel():      # False: cancelled meanwhile
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)
    except (_cf.InvalidStateError, RuntimeError):
        pass


def _cancel_unstarted(ref):
    from nanoray._core import _runtime as _rt
    try:
        return _rt.cancel_unstarted(ref)
    except Exception:
        return False
