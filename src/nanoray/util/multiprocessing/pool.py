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
import operator
import os
import queue
import threading
import time
import types
import weakref
from multiprocessing import TimeoutError

import nanoray
from nanoray import exceptions
from nanoray.util._collector import collect
from nanoray.util.multiprocessing.results import (ApplyResult, AsyncResult,  # noqa: F401
                                                  IMapIterator, IMapUnorderedIterator,
                                                  MapResult)

__all__ = ["Pool", "TimeoutError"]

_RUN, _CLOSE, _TERMINATE = 0, 1, 2
_PLAIN_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)
_PER_WORKER = 2                        # chunks in flight per actor
_MAP, _STAR, _APPLY, _IMAP = 0, 1, 2, 3


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
        # Comprehensions, not list(map(...)): a StopIteration the function
        # raises must fail the call, not end the chunk early.
        if mode == _MAP:
            return [func(x) for x in chunk]
        if mode == _IMAP:                        # each item's own outcome: imap raises at
            out = []                             # that item, in its place, and goes on
            for x in chunk:
                try:
                    out.append((True, func(x)))
                except Exception as e:
                    import traceback
                    out.append((False, (e, traceback.format_exc())))
            return out
        if mode == _STAR:
            return [func(*x) for x in chunk]
        args, kwds = chunk
        return [func(*args, **kwds)]

    def pid(self):
        return os.getpid()


_worker_class = None


class _Worker:
    __slots__ = ("actor", "load", "calls", "retiring")

    def __init__(self, actor):
        self.actor, self.load, self.calls, self.retiring = actor, 0, 0, False


class _Job:
    """One map/imap/apply: its chunks, read lazily, one reader at a time."""
    __slots__ = ("result", "chunks", "func_ref", "mode", "handed_out", "reading", "held")

    def __init__(self, result, chunks, func_ref, mode):
        self.result, self.chunks, self.func_ref, self.mode = result, chunks, func_ref, mode
        self.handed_out = 0
        self.reading = False                # a thread is reading its iterable (no lock held)
        self.held = None                    # a chunk read when no actor had room


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
        self._callbacks = None                # queue of the callback thread, made at first use
        self._cb_thread = None
        self._cb_done = False                 # terminated: callbacks run where they arise
        self._state = _RUN
        self._jobs = collections.deque()      # _Job, taking turns
        self._inflight = {}                   # ref -> (result, chunk index, worker)
        self._outstanding = set()             # results not yet complete
        self._funcs = collections.OrderedDict()  # func -> (its ref, kept loaded)
        self._workers = [self._start_worker() for _ in range(processes)]
        # The thread holds the pool weakly: a pool nobody holds is collected
        # (and terminated), as the stdlib's is.
        self._thread = threading.Thread(target=collect, args=(weakref.ref(self), self._cond),
                                        name="nanoray-pool", daemon=True)
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

    def map(self, func, iterable, chunksize=None, progress=False):
        """As the stdlib's; progress=True (or a label) draws a progress bar."""
        return self._map_async(func, iterable, chunksize, _MAP, progress=progress).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return self._map_async(func, iterable, chunksize, _MAP, callback, error_callback)

    def starmap(self, func, iterable, chunksize=None, progress=False):
        return self._map_async(func, iterable, chunksize, _STAR, progress=progress).get()

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
        self._end(RuntimeError("the pool was terminated before this result was ready"))

    def _end(self, err):
        """Terminates: the actors go, every outstanding result fails with err."""
        with self._cond:
            if self._state == _TERMINATE:
                return
            self._state = _TERMINATE
            self._jobs.clear()
            self._inflight.clear()
            outstanding, self._outstanding = list(self._outstanding), set()
            workers, self._workers = self._workers, []
            self._cond.notify_all()
        for w in workers:
            _kill(w.actor)
        for r in outstanding:
            r._fail(None, err)
            r._length(0)
        with self._cond:
            cb_thread, self._cb_done = self._cb_thread, True
            if cb_thread is not None:
                self._callbacks.put(None)    # its thread ends after the callbacks queued
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if cb_thread is not None and threading.current_thread() is not cb_thread:
            cb_thread.join()                 # join() returns once every callback ran

    def _run_callback(self, result, cb, value):
        """Runs result's callback in the pool's callback thread (in this one
        once that has ended: a chunk delivered while the pool terminated)."""
        with self._cond:
            if not self._cb_done:
                if self._cb_thread is None:
                    self._callbacks = queue.SimpleQueue()
                    self._cb_thread = threading.Thread(
                        target=_run_callbacks, args=(self._callbacks,),
                        name="nanoray-pool-callbacks", daemon=True)
                    self._cb_thread.start()
                self._callbacks.put((result, cb, value))
                return
        result._finish(cb, value)

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

    def _map_async(self, func, iterable, chunksize, mode, callback=None, error_callback=None,
                   progress=False):
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:                 # the stdlib's default: four chunks a process
            chunksize = max(1, -(-len(iterable) // (self._processes * 4)))
        chunksize = _check_chunksize(chunksize)
        n = -(-len(iterable) // chunksize)
        result = MapResult(n, callback, error_callback)
        if progress:
            from nanoray import _progress
            result._bar = _progress.Bar(len(iterable), _progress.label(progress, "map"))
        if n == 0:                            # nothing to wait for, busy or not
            self._check_running()
            result._length(0)
            return result
        self._submit(result, func, _chunks(iterable, chunksize), mode)
        return result

    def _imap(self, result, func, iterable, chunksize):
        chunksize = _check_chunksize(chunksize)
        self._submit(result, func, _chunks(iterable, chunksize), _IMAP)
        return result

    def _func_ref(self, func):
        """(func in the store, whether workers keep it loaded): functions are
        stored once (the last 64 used); other callables, which may carry
        data (joblib's batches do), each time, and are not kept."""
        if not isinstance(func, _PLAIN_FUNCTIONS):
            return (nanoray.put(func), False)
        with self._cond:
            ref = self._funcs.get(func)
        if ref is None:
            ref = (nanoray.put(func), True)
            with self._cond:
                self._funcs[func] = ref
                if len(self._funcs) > 64:
                    self._funcs.popitem(last=False)
        return ref

    def _submit(self, result, func, chunks, mode):
        if not callable(func):
            raise TypeError("%r is not callable" % (func,))
        self._check_running()
        func_ref = self._func_ref(func)       # pickled once, not per job or chunk
        result._pool = self
        with self._cond:
            self._check_running()
            self._outstanding.add(result)
            self._jobs.append(_Job(result, chunks, func_ref, mode))
            self._cond.notify_all()
        self._dispatch()

    def _room(self):
        """The least busy live actor with room for a chunk, or None (locked)."""
        live = [w for w in self._workers if not w.retiring]
        if not live:
            return None
        w = min(live, key=lambda w: w.load)
        return w if w.load < _PER_WORKER else None

    def _dispatch(self):
        """Hands out chunks while an actor has room.  Iterables are read with
        no lock held (one reader per job), so a slow or blocking iterable
        holds up neither the pool's thread nor other jobs."""
        while True:
            with self._cond:
                if self._state == _TERMINATE or self._room() is None:
                    return
                job = next((j for j in self._jobs if not j.reading), None)
                if job is None:
                    return
                self._jobs.remove(job)
                self._jobs.append(job)        # jobs take turns: none waits behind a long one
                chunk, job.held = job.held, None
                job.reading = chunk is None
            error = done = None
            if chunk is None:
                try:
                    chunk = next(job.chunks)
                except StopIteration:
                    done = True
                except BaseException as e:    # the iterable itself raised: at its place
                    error = e
            with self._cond:
                job.reading = False
                if done or error is not None:
                    if job in self._jobs:
                        self._jobs.remove(job)
                    index = job.handed_out
                else:
                    w = self._room() if self._state != _TERMINATE else None
                    if w is None:             # the room went meanwhile: keep the chunk
                        job.held = chunk
                        return
                    ref = w.actor.run.remote(job.func_ref, chunk, job.mode)
                    self._inflight[ref] = (job.result, job.handed_out, w)
                    job.result._refs.add(ref)
                    job.handed_out += 1
                    w.load += 1
                    w.calls += 1
                    if self._maxtasks is not None and w.calls >= self._maxtasks:
                        w.retiring = True
                    self._cond.notify_all()
                    continue
            if error is not None:
                job.result._fail(index, error)
                job.result._length(index + 1)
            else:
                job.result._length(index)
            with self._cond:
                self._settle(job.result)

    def _settle(self, result):
        """Forgets a result once every chunk of it is handed out and done (locked)."""
        if not any(r is result for r, _, _ in self._inflight.values()) and \
                not any(j.result is result for j in self._jobs):
            self._outstanding.discard(result)

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
            result._fail(index, exceptions._as_stdlib(e))
        else:
            result._chunk(index, values)
        with self._cond:
            w.load -= 1
            if (died or (w.retiring and w.load == 0)) and w in self._workers:
                self._workers[self._workers.index(w)] = self._start_worker()
                _kill(w.actor)
            self._settle(result)
        self._dispatch()

    def _in_flight(self):
        """For the pool's thread (locked): what to wait for; None to end."""
        if self._state == _TERMINATE or (self._state == _CLOSE and not self._jobs
                                         and not self._inflight):
            return None                      # terminated, or closed with nothing left
        return list(self._inflight)

    def _runtime_gone(self, e):
        self._end(_gone(e))
        return True

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
        except Exception as e:               # the runtime went away
            self._end(_gone(e))
            return False
        for ref in ready:
            self._deliver(ref)
        return True


def _run_callbacks(q):
    while True:
        item = q.get()
        if item is None:
            return
        result, cb, value = item
        result._finish(cb, value)


def _gone(e):
    return exceptions.RaySystemError("nanoray stopped before this result was ready: %s"
                                     % (exceptions._safe_repr(e),))


def _chunks(iterable, size):
    if type(iterable) in (list, tuple, range):
        # Slices: a range's chunk travels as a range, a list's is copied in C.
        try:
            n = len(iterable)
        except OverflowError:            # a range longer than sys.maxsize: read lazily
            n = None
        if n is not None:
            for i in range(0, n, size):
                yield iterable[i:i + size]
            return
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _check_chunksize(chunksize):
    """An int of 1 or more, or anything that is one (numpy's integers), as
    multiprocessing takes; returned as an int."""
    try:
        n = operator.index(chunksize)
    except TypeError:
        raise ValueError("chunksize must be an int, got %r" % (chunksize,)) from None
    if n < 1:
        raise ValueError("Chunksize must be 1+, not {0:n}".format(n))
    return n


def _kill(actor):
    try:
        nanoray.kill(actor)
    except Exception:
        pass
