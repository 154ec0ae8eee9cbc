"""ActorPool: spread calls over a fixed set of actors, as ray.util.ActorPool.

A pool hands each submitted value to an idle actor through a user function
``fn(actor, value) -> ObjectRef`` and remembers which actor is busy with
which call.  An actor counts as busy until its result has been *taken* from
the pool (get_next / get_next_unordered), not merely until the call ends --
that is Ray's contract, and it keeps a slow consumer from flooding actors.
When every actor is busy, submissions wait in a FIFO backlog and are handed
out as results are taken.

Each call gets a sequence number at dispatch.  get_next() returns results in
that order; get_next_unordered() returns whichever finished first (ties go
to the earliest dispatched).  Mixing the two is allowed as in Ray, with Ray's
rule: once get_next_unordered() has returned a later call, get_next() skips
past it, and raises ValueError when nothing is left after it.

Only the public API is used (nanoray.get, nanoray.wait), so the pool works
with any backend.
"""

from collections import deque

import nanoray

__all__ = ["ActorPool"]

_TIMEOUT_MSG = "Timed out waiting for result"


class _Call:
    """One dispatched call: its result ref(s) and the actor running it."""

    __slots__ = ("result", "refs", "actor")

    def __init__(self, result, actor):
        self.result = result               # what fn returned: a ref, or a list/tuple of refs
        self.refs = [result] if isinstance(result, nanoray.ObjectRef) else list(result)
        self.actor = actor


def _as_call(result, actor):
    if isinstance(result, nanoray.ObjectRef):
        return _Call(result, actor)
    if (isinstance(result, (list, tuple)) and result
            and all(isinstance(r, nanoray.ObjectRef) for r in result)):
        return _Call(result, actor)
    raise TypeError("ActorPool: fn(actor, value) must return an ObjectRef (or a list of "
                    "ObjectRefs), got %r" % (type(result).__name__,))


def _actor_died_error():
    # Looked up at call time: the class belongs to the actor runtime.
    return getattr(nanoray.exceptions, "ActorDiedError", None)


class ActorPool:
    """Utility class to operate on a fixed pool of actors.

    Arguments:
        actors: list of actor handles to use in this pool.

    Example::

        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        print(list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])))
        # [2, 4, 6, 8]
    """

    def __init__(self, actors):
        self._idle = list(actors)          # free actors; the last one is handed out first
        self._calls = {}                   # sequence number -> _Call, in dispatch order
        self._seq_of = {}                  # the ref wait() reports for a call -> its number
        self._backlog = deque()            # (fn, value) submitted while no actor was free
        self._next_seq = 0                 # number the next dispatched call gets
        self._next_ordered = 0             # number get_next() returns next

    # -- submitting ---------------------------------------------------------

    def submit(self, fn, value):
        """Schedules fn(actor, value) on an idle actor, or queues it until one
        is free.  Collect the result with get_next() / get_next_unordered()."""
        if not self._idle:
            self._backlog.append((fn, value))
            return
        actor = self._idle.pop()
        try:
            call = _as_call(fn(actor, value), actor)
        except BaseException:
            self._idle.append(actor)       # the actor took no work: it stays free
            raise
        seq = self._next_seq
        self._next_seq += 1
        self._calls[seq] = call
        self._seq_of[call.refs[-1]] = seq

    def map(self, fn, values):
        """Applies fn(actor, value) over values on the pool's actors; returns
        an iterator of the results in the order of values.

        Results of earlier submissions not yet collected are discarded
        first.  All values are submitted at once (the backlog holds those no
        actor is free for); iterate to collect the results."""
        return self._map(fn, values, self.get_next)

    def map_unordered(self, fn, values):
        """As map(), but yields each result as soon as it is ready."""
        return self._map(fn, values, self.get_next_unordered)

    def _map(self, fn, values, next_result):
        self._discard_pending()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield next_result()
        return results()

    # -- collecting ---------------------------------------------------------

    def has_next(self):
        """Whether any dispatched call's result has not been returned yet."""
        return bool(self._calls)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """Returns the result of the next call in submission order, waiting
        up to timeout seconds (None: forever).

        Raises StopIteration when nothing is pending, ValueError when
        get_next_unordered() has already returned every later call, and
        TimeoutError when timeout passes first.  The call then stays pending,
        unless ignore_if_timedout is true: then it is dropped (its actor is
        free again) before TimeoutError is raised."""
        if not self._calls:
            raise StopIteration("No more results to get")
        if self._next_ordered >= self._next_seq:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        seq = self._next_ordered
        call = self._calls[seq]
        if timeout is not None:
            ready, _ = nanoray.wait(call.refs, num_returns=len(call.refs), timeout=timeout)
            if len(ready) < len(call.refs):
                if not ignore_if_timedout:
                    raise TimeoutError(_TIMEOUT_MSG)
                self._drop(seq)
                raise TimeoutError("%s. The task %r has been ignored."
                                   % (_TIMEOUT_MSG, call.result))
        self._forget(seq)
        return self._take_result(call)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """Returns the result of any finished call (the earliest submitted of
        those finished), waiting up to timeout seconds (None: forever).

        Raises StopIteration when nothing is pending and TimeoutError when
        timeout passes first.  With ignore_if_timedout, the oldest pending
        call is dropped (its actor is free again) before TimeoutError."""
        if not self._calls:
            raise StopIteration("No more results to get")
        ready, _ = nanoray.wait([c.refs[-1] for c in self._calls.values()],
                                num_returns=1, timeout=timeout)
        if not ready:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MSG)
            seq = next(iter(self._calls))
            result = self._calls[seq].result
            self._drop(seq)
            raise TimeoutError("%s. The task %r has been ignored." % (_TIMEOUT_MSG, result))
        seq = self._seq_of[ready[0]]
        call = self._calls[seq]
        self._forget(seq)
        return self._take_result(call)

    # -- the actors ---------------------------------------------------------

    def has_free(self):
        """Whether an actor is idle and no submission is waiting for one."""
        return bool(self._idle) and not self._backlog

    def pop_idle(self):
        """Removes an idle actor from the pool and returns it; None when
        has_free() is false."""
        if self.has_free():
            return self._idle.pop()
        return None

    def push(self, actor):
        """Adds an actor to the pool (it takes a waiting submission at once,
        if any).  Raises ValueError if the actor is already in the pool."""
        if actor in self._idle or any(actor == c.actor for c in self._calls.values()):
            raise ValueError("Actor already belongs to current ActorPool")
        self._release(actor)

    # -- internals ----------------------------------------------------------

    def _forget(self, seq):
        """Removes a call from the pending set; advances the ordered cursor past it."""
        call = self._calls.pop(seq)
        del self._seq_of[call.refs[-1]]
        if seq >= self._next_ordered:
            self._next_ordered = seq + 1
        return call

    def _drop(self, seq):
        """Abandons a pending call; its actor takes new work (queued behind
        the abandoned call on that actor, as in Ray)."""
        self._release(self._forget(seq).actor)

    def _take_result(self, call):
        """Gets a collected call's value and frees its actor -- unless the
        actor died, so that later submissions do not keep landing on it."""
        alive = True
        try:
            return nanoray.get(call.result)
        except BaseException as e:
            died = _actor_died_error()
            if died is not None and isinstance(e, died):
                alive = False
            raise
        finally:
            self._release(call.actor, alive)

    def _release(self, actor, alive=True):
        if alive:
            self._idle.append(actor)
        while self._backlog and self._idle:
            self.submit(*self._backlog.popleft())

    def _discard_pending(self):
        """Forgets every uncollected call and queued submission (map() starts
        afresh, as in Ray); the actors of dropped calls are free again."""
        self._backlog.clear()
        for seq in list(self._calls):
            self._drop(seq)
        self._next_ordered = self._next_seq
