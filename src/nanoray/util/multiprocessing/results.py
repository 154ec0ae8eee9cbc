"""The results a Pool hands out (ApplyResult, MapResult and the imap
iterators), as the stdlib's: the pool delivers each chunk to its result;
a caller waiting in get() or next() delivers the result's chunks itself
while they are in flight (no hand-off through the pool's thread), and
callbacks run one at a time in the pool's callback thread, which holds no
lock of the pool's while it runs them."""

import collections
import itertools
import threading
import time
from multiprocessing import TimeoutError

from nanoray import exceptions

_set_lock = threading.Lock()

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
        self._bar = None                     # a progress bar (map(..., progress=True))

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
        if self._bar is not None:
            self._bar.close()
        cb = self._callback if success else self._error_callback
        if cb is not None and self._pool is not None:
            self._pool._run_callback(self, cb, value)   # there, then ready()
            return
        self._event.set()

    def _finish(self, cb, value):
        """In the pool's callback thread: the callback, then ready(), as in
        the stdlib (callbacks run one at a time, in one thread)."""
        try:
            cb(value)
        except Exception:                    # a callback's error is its own
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


class MapResult(ApplyResult):
    """map_async's result: the list, in order, once every chunk is in."""

    def __init__(self, nchunks, callback=None, error_callback=None):
        super().__init__(callback, error_callback)
        self._parts = {}
        self._nchunks = nchunks

    def _chunk(self, index, values):
        self._parts[index] = values
        if self._bar is not None:
            self._bar.advance(len(values))
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

    def _chunk(self, index, outcomes):
        """A chunk's (ok, value) per item; a failed item's value is (its
        exception, the remote traceback), raised as multiprocessing does."""
        with self._cond:
            self._parts[index] = [(True, v) if ok else (False, exceptions._with_remote_traceback(*v))
                                  for ok, v in outcomes]
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
