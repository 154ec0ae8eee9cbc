"""multiprocessing.Pool on nanoray, under Ray's path (ray.util.multiprocessing).

A pool is `processes` actors, one process each; each runs the initializer
once, when it starts.  Like Ray's actors once they run, they hold no CPU
unless ray_remote_args asks for one (so a pool, even one kept alive, never
keeps tasks from running), and its BLAS runs one thread.  A job (map, imap, apply, ...) is cut into chunks; chunks go to the
least busy actor, at most two at a time per actor, so a slow chunk never
holds up the others and an idle actor never waits for the driver.  The
iterable is read lazily, as chunks are handed out, so imap over an endless
generator works.  One thread per pool collects results in the background
and runs callbacks, as the stdlib's result handler does.

Differences from the stdlib, on purpose:
- An exception raised by the function is re-raised as the same exception
  (its remote traceback chained as __cause__, as the stdlib does); a worker
  that dies fails its chunk with nanoray's ActorDiedError and is replaced,
  where the stdlib's pool hangs.
- terminate() fails the results still outstanding (RuntimeError) instead of
  leaving their get() to wait forever.
"""

import collections
import itertools
import os
import threading
import time
import types
from multiprocessing import TimeoutError
from multiprocessing.pool import RemoteTraceback

import nanoray
from nanoray import exceptions

__all__ = ["Pool", "TimeoutError"]

_RUN, _CLOSE, _TERMINATE = 0, 1, 2
_PLAIN_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)
_PER_WORKER = 2                        # chunks in flight per actor
_MAP, _STAR, _APPLY = 0, 1, 2


class PoolWorker:
    """One pool process: the initializer at start, then chunks of calls."""

    def __init__(self, initializer, initargs):
        self._funcs = collections.OrderedDict()   # the functions of recent jobs, loaded
        if initializer is not None:
            initializer(*initargs)

    def run(self, func_box, chunk, mode):
        ref, keep = func_box                     # nested: it arrives as a ref, not loaded
        func = self._funcs.get(ref.hex()) if keep else None
        if func is None:
            func = nanoray.get(ref)
            if keep:
                self._funcs[ref.hex()] = func
                if len(self._funcs) > 64:
                    self._funcs.popitem(last=False)
        if mode == _MAP:
            return [func(x) for x in chunk]
        if mode == _STAR:
            return [func(*x) for x in chunk]
        args, kwds = chunk
        return [func(*args, **kwds)]

    def pid(self):
        return os.getpid()


_worker_class = None


def _unwrap(e):
    """The function's own exception, with the remote traceback as __cause__."""
    if isinstance(e, exceptions.RayTaskError) and isinstance(e.cause, BaseException):
        cause = e.cause
        if e.traceback_str:
            cause.__cause__ = RemoteTraceback(e.traceback_str)
        return cause
    return e


class ApplyResult:
    """What apply_async returns: get(), wait(), ready(), successful()."""

    def __init__(self, callback=None, error_callback=None):
        self._event = threading.Event()
        self._refs = set()                   # its chunks in flight
        self._pool = None
        self._callback = callback
        self._error_callback = error_callback
        self._success = None
        self._value = None
        self._done = False

    def ready(self):
        return self._event.is_set()

    def successful(self):
        if not self.ready():
            raise ValueError("%r not ready" % (self,))
        return self._success

    def wait(self, timeout=None):
        _wait_helping(self, self._event.is_set, self._event.wait, timeout)

    def get(self, timeout=None):
        if not _wait_helping(self, self._event.is_set, self._event.wait, timeout):
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _set(self, success, value):
        with _set_lock:
            if self._done:
                return
            self._done = True
        self._success, self._value = success, value
        cb = self._callback if success else self._error_callback
        if cb is not None:                   # before ready(), as in the stdlib
            try:
                cb(value)
            except Exception:                # a callback's error is its own
                import traceback
                traceback.print_exc()
        self._event.set()

    # chunk events, from the pool
    def _chunk(self, index, values):
        self._set(True, values[0])

    def _fail(self, index, error):
        self._set(False, error)

    def _length(self, n):
        pass


AsyncResult = ApplyResult


def _wait_helping(result, arrived, wait, timeout):
    """Until arrived() or the timeout: the caller delivers the result's
    chunks itself while it has some in flight, else waits for the pool's
    thread (in short slices, so that it notices chunks handed out later)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not arrived():
        pool = result._pool
        if pool is None or not pool._help(result, deadline):
            left = 0.01 if deadline is None else min(0.01, deadline - time.monotonic())
            if left <= 0:
                return arrived()
            wait(left)
        elif deadline is not None and time.monotonic() >= deadline:
            return arrived()
    return True
_set_lock = threading.Lock()


class MapResult(ApplyResult):
    """map_async's result: the list, in order, once every chunk is in."""

    def __init__(self, nchunks, callback=None, error_callback=None):
        super().__init__(callback, error_callback)
        self._parts = {}
        self._nchunks = nchunks

    def _chunk(self, index, values):
        self._parts[index] = values
        self._maybe_done()

    def _length(self, n):
        self._nchunks = n
        self._maybe_done()

    def _maybe_done(self):
        if self._nchunks is not None and len(self._parts) == self._nchunks:
            self._set(True, list(itertools.chain.from_iterable(
                self._parts[i] for i in range(self._nchunks))))


class IMapIterator:
    """imap's iterator: results in order, each as soon as it and those before
    it are in; next(timeout) raises multiprocessing.TimeoutError."""

    def __init__(self):
        self._cond = threading.Condition()
        self._refs = set()
        self._pool = None
        self._items = collections.deque()
        self._parts = {}
        self._next_chunk = 0
        self._nchunks = None

    def __iter__(self):
        return self

    def next(self, timeout=None):
        def arrived():
            return bool(self._items) or self._finished()

        def wait(t):
            with self._cond:
                return self._cond.wait_for(arrived, t)
        if not _wait_helping(self, arrived, wait, timeout):
            raise TimeoutError
        with self._cond:
            if not self._items:
                raise StopIteration
            ok, value = self._items.popleft()
        if ok:
            return value
        raise value

    __next__ = next

    def _finished(self):
        return self._nchunks is not None and self._next_chunk >= self._nchunks

    def _chunk(self, index, values):
        with self._cond:
            self._parts[index] = [(True, v) for v in values]
            self._flush()

    def _fail(self, index, error):
        with self._cond:
            if index is None:                # terminated: the error comes next, then the end
                self._parts.clear()
                self._items.append((False, error))
                self._nchunks = self._next_chunk
            else:
                self._parts[index] = [(False, error)]
            self._flush()

    def _length(self, n):
        with self._cond:
            self._nchunks = n
            self._cond.notify_all()

    def _flush(self):
        while self._next_chunk in self._parts:
            self._items.extend(self._parts.pop(self._next_chunk))
            self._next_chunk += 1
        self._cond.notify_all()


class IMapUnorderedIterator(IMapIterator):
    """imap_unordered's iterator: results as chunks finish."""

    def _flush(self):
        for index in list(self._parts):
            self._items.extend(self._parts.pop(index))
            self._next_chunk += 1
        self._cond.notify_all()


class _Worker:
    __slots__ = ("actor", "load", "calls", "retiring")

    def __init__(self, actor):
        self.actor, self.load, self.calls, self.retiring = actor, 0, 0, False


class Pool:
    """multiprocessing.Pool's API, run by nanoray actors."""

    def __init__(self, processes=None, initializer=None, initargs=None, maxtasksperchild=None,
                 context=None, ray_address=None, ray_remote_args=None):
        global _worker_class
        if processes is None:
            processes = int(nanoray.cluster_resources().get("CPU", 1)) or 1
        if not isinstance(processes, int) or processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int)
                                             or maxtasksperchild < 1):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if ray_address is not None and not nanoray.is_initialized():
            nanoray.init(address=ray_address)
        if _worker_class is None:
            _worker_class = nanoray.remote(PoolWorker)
        self._options = dict(ray_remote_args or {})
        self._init = (initializer, tuple(initargs or ()))
        self._maxtasks = maxtasksperchild
        self._processes = processes
        self._cond = threading.Condition()
        self._state = _RUN
        self._jobs = collections.deque()     # [result, chunks, func ref, mode, handed out]
        self._inflight = {}                  # ref -> (result, chunk index, worker)
        self._outstanding = set()            # results not yet complete
        self._funcs = collections.OrderedDict()  # func -> (its ref,)
        self._workers = [self._start_worker() for _ in range(processes)]
        self._thread = threading.Thread(target=self._collect, name="nanoray-pool",
                                        daemon=True)
        self._thread.start()

    def _start_worker(self):
        return _Worker(_worker_class.options(**self._options).remote(*self._init))

    # -- the stdlib's API ------------------------------------------------

    def apply(self, func, args=(), kwds={}):
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        result = ApplyResult(callback, error_callback)
        self._submit(result, func, iter([(tuple(args), dict(kwds))]), _APPLY)
        return result

    def map(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, chunksize, _MAP).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return self._map_async(func, iterable, chunksize, _MAP, callback, error_callback)

    def starmap(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, chunksize, _STAR).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return self._map_async(func, iterable, chunksize, _STAR, callback, error_callback)

    def imap(self, func, iterable, chunksize=1):
        return self._imap(IMapIterator(), func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        return self._imap(IMapUnorderedIterator(), func, iterable, chunksize)

    def close(self):
        with self._cond:
            if self._state == _RUN:
                self._state = _CLOSE
            self._cond.notify_all()

    def terminate(self):
        with self._cond:
            if self._state == _TERMINATE:
                return
            self._state = _TERMINATE
            jobs, self._jobs = list(self._jobs), collections.deque()
            self._inflight.clear()
            outstanding, self._outstanding = list(self._outstanding), set()
            workers, self._workers = self._workers, []
            self._cond.notify_all()
        for w in workers:
            _kill(w.actor)
        err = RuntimeError("the pool was terminated before this result was ready")
        for r in outstanding:
            r._fail(None, err)
            r._length(0)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def join(self):
        with self._cond:
            if self._state == _RUN:
                raise ValueError("Pool is still running")
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self.terminate()                     # its work is done: the actors go

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc):
        self.terminate()

    def __del__(self):
        if getattr(self, "_state", _TERMINATE) != _TERMINATE:
            try:
                self.terminate()
            except Exception:
                pass

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or "
                                  "pickled")

    def __repr__(self):
        return "<nanoray.util.multiprocessing.Pool state=%s processes=%d>" % (
            ("RUN", "CLOSE", "TERMINATE")[self._state], self._processes)

    # -- jobs --------------------------------------------------------------

    def _check_running(self):
        if self._state != _RUN:
            raise ValueError("Pool not running")

    def _map_async(self, func, iterable, chunksize, mode, callback=None, error_callback=None):
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:                 # the stdlib's default: four chunks a process
            chunksize = max(1, -(-len(iterable) // (self._processes * 4)))
        _check_chunksize(chunksize)
        chunks = _chunks(iterable, chunksize)
        n = -(-len(iterable) // chunksize)
        result = MapResult(n, callback, error_callback)
        self._submit(result, func, chunks, mode)
        return result

    def _imap(self, result, func, iterable, chunksize):
        _check_chunksize(chunksize)
        self._submit(result, func, _chunks(iterable, chunksize), _MAP)
        return result

    def _submit(self, result, func, chunks, mode):
        if not callable(func):
            raise TypeError("%r is not callable" % (func,))
        with self._cond:
            self._check_running()
        func_ref = self._func_ref(func)       # pickled once, not per job or chunk
        result._pool = self
        with self._cond:
            self._check_running()
            self._outstanding.add(result)
            self._jobs.append([result, chunks, func_ref, mode, 0])
            self._dispatch()
            self._cond.notify_all()

    def _func_ref(self, func):
        """(func in the store, whether workers keep it loaded): functions are
        stored once (the last 64 used); other callables, which may carry
        data (joblib's batches do), each time, and are not kept."""
        if not isinstance(func, _PLAIN_FUNCTIONS):
            return (nanoray.put(func), False)
        ref = self._funcs.get(func)
        if ref is None:
            ref = self._funcs[func] = (nanoray.put(func), True)
            if len(self._funcs) > 64:
                self._funcs.popitem(last=False)
        return ref

    def _dispatch(self):
        """Hands out chunks while an actor has room (under the lock)."""
        while self._jobs:
            live = [w for w in self._workers if not w.retiring]
            if not live:
                return
            w = min(live, key=lambda w: w.load)
            if w.load >= _PER_WORKER:
                return
            job = self._jobs[0]
            result, it, func_ref, mode, index = job
            try:
                chunk = next(it)
            except StopIteration:
                self._jobs.popleft()
                result._length(index)
                self._settle(result)
                continue
            except BaseException as e:        # the iterable itself raised: at its place
                self._jobs.popleft()
                result._fail(index, e)
                result._length(index + 1)
                self._settle(result)
                continue
            job[4] = index + 1
            self._jobs.rotate(-1)             # jobs take turns: none waits behind a long one
            ref = w.actor.run.remote(func_ref, chunk, mode)
            self._inflight[ref] = (result, index, w)
            result._refs.add(ref)
            w.load += 1
            w.calls += 1
            if self._maxtasks is not None and w.calls >= self._maxtasks:
                w.retiring = True

    def _settle(self, result):
        """Forgets a result once every chunk of it is handed out and done."""
        if not any(r is result for r, _, _ in self._inflight.values()) and \
                not any(j[0] is result for j in self._jobs):
            self._outstanding.discard(result)

    def _collect(self):
        """The result thread: waits for chunks, delivers them, refills actors."""
        while True:
            with self._cond:
                while not self._inflight and self._state != _TERMINATE and not (
                        self._state == _CLOSE and not self._jobs):
                    self._cond.wait()
                if self._state == _TERMINATE or not self._inflight:
                    return                   # terminated, or closed with nothing left
                refs = list(self._inflight)
            try:
                ready, _ = nanoray.wait(refs, num_returns=1, timeout=0.05)
            except Exception:                # the runtime went away: nothing more comes
                return
            for ref in ready:
                self._deliver(ref)

    def _deliver(self, ref):
        """A finished chunk to its result, and the next chunks out; done by
        whichever thread sees it first (this pool's, or a caller waiting)."""
        with self._cond:
            entry = self._inflight.pop(ref, None)
        if entry is None:                    # delivered already, or terminated
            return
        result, index, w = entry
        result._refs.discard(ref)
        died = False
        try:
            values = nanoray.get(ref)
        except BaseException as e:
            died = isinstance(e, exceptions.RayActorError)
            result._fail(index, _unwrap(e))
        else:
            result._chunk(index, values)
        with self._cond:
            w.load -= 1
            if (died or (w.retiring and w.load == 0)) and w in self._workers:
                self._workers[self._workers.index(w)] = self._start_worker()
                _kill(w.actor)
            self._settle(result)
            if self._state != _TERMINATE:
                self._dispatch()

    def _help(self, result, deadline):
        """Waits in the calling thread for one of result's chunks and delivers
        it: no hand-off through the pool's thread (two thread wake-ups).
        False when it has none in flight to wait for."""
        with self._cond:
            refs = list(result._refs)
        if not refs:
            return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ready, _ = nanoray.wait(refs, num_returns=1, timeout=left)
        except Exception:
            return False
        for ref in ready:
            self._deliver(ref)
        return True


def _chunks(iterable, size):
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _check_chunksize(chunksize):
    if not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize)
                         if isinstance(chunksize, int) else "chunksize must be an int")


def _kill(actor):
    try:
        nanoray.kill(actor)
    except Exception:
        pass
