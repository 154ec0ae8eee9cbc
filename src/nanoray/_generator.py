"""ObjectRefGenerator and DynamicObjectRefGenerator: what generator tasks
return, with Ray's names and behaviour.

A streaming generator task's return is the first cell of a chain (see
nanoray/_core/rt/stream.pyx): each cell, once sealed, holds (ref of the next
value, next cell), or None at the end.  Iterating waits for the current
cell and yields the value's ref as soon as the worker has yielded it."""

__all__ = ["DynamicObjectRefGenerator", "ObjectRefGenerator"]

_quiet = None


def quiet(ref, everywhere=False):
    """nanoray._core._runtime.quiet (imported at first use)."""
    global _quiet
    if _quiet is None:
        from nanoray._core._runtime import quiet as q
        _quiet = q
    _quiet(ref, everywhere)


class ObjectRefGenerator:
    """Refs of a generator task's values, each available as soon as the task
    yields it: ``for ref in gen``, ``next(gen)``, ``async for ref in gen``;
    ``nanoray.wait([gen])`` returns it as ready once its next value is.  An
    exception raised by the task arrives as the ref at the item where it
    happened (getting it raises); the values before it stay readable."""

    def __init__(self, first_cell, task=None, done=None):
        self._cell = first_cell          # None once finished
        self._done = done                # sealed (None) once the task has ended
        # Who reports a failure nobody fetched ("Unhandled error"): the item
        # it is (a failed cell is handed out as one), or the completion,
        # while the stream is not read to its end.  The cell held here is
        # not the user's: quiet (a failed one would report twice).
        quiet(first_cell)
        # What cancel() names: the task itself, not a ref to its first cell
        # (which would keep every value of the stream alive).
        if task is None:
            from nanoray._core import _runtime
            task = _runtime.task_of(first_cell)    # None: no task (it already ended)
        self._task = task

    def __iter__(self):
        return self

    def __next__(self):
        return self._advance(None)

    def _next_sync(self, timeout_s=None):
        """The next ref, waiting at most timeout_s (GetTimeoutError)."""
        return self._advance(timeout_s)

    def _advance(self, timeout):
        from nanoray import _api
        cell = self._cell
        if cell is None:
            raise StopIteration
        try:
            value = _api.get(cell, timeout=timeout)
        except Exception as e:
            if isinstance(e, _api.exceptions.GetTimeoutError):
                raise
            # The cell itself failed (the task failed before it could store
            # an item, or its worker died): that ref is the last item.
            self._end()
            return cell
        return self._step(value)

    def _step(self, value):
        if value is None:
            self._end()
            raise StopIteration
        item, self._cell = value
        if self._cell is None:           # the last item: a failure (the stream ends with it)
            self._end()
        else:
            quiet(self._cell)
        return item

    def _end(self):
        # Every item was handed out, a failure among them (which reports
        # itself if dropped unseen): the completion's failure, the same one,
        # is not reported again, by this copy of the generator or another
        # (one passed to a task or actor).
        self._cell = None
        if self._done is not None:
            quiet(self._done, True)

    def __del__(self):
        # Dropped before its failed last item was read: the cell goes first,
        # then the item, whose drop reports it if nobody else saw it.
        if self._cell is None:
            return
        try:
            from nanoray._core._runtime import failed_tail
            item = failed_tail(self._cell, self._done)
        except Exception:
            return
        if item is not None:
            self._cell = None
            del item

    def __aiter__(self):
        return self

    async def __anext__(self):
        cell = self._cell
        if cell is None:
            raise StopAsyncIteration
        try:
            value = await cell
        except Exception:
            self._end()
            return cell
        try:
            return self._step(value)
        except StopIteration:
            raise StopAsyncIteration from None

    def completed(self):
        """A ref that is ready once the generator task has ended: its value
        is None, also when the generator raised (the exception is the item
        where it happened); getting it raises if the task could not run or
        its worker died."""
        if self._done is None:
            raise ValueError("this ObjectRefGenerator was not returned by a task")
        return self._done

    def is_finished(self):
        """True once every item was taken (or the stream ended)."""
        return self._cell is None

    def next_ready(self):
        """True when next() would return at once (its value is stored, or
        the stream has ended).  Ray's name; is_next_ready is the same."""
        return self.is_next_ready()

    def is_next_ready(self):
        """True when next() would return at once (its value is stored, or
        the stream has ended)."""
        from nanoray import _api
        if self._cell is None:
            return True
        return bool(_api.wait([self._cell], timeout=0)[0])

    def _ready_ref(self):
        """The ref that is ready when the next item is (None: finished)."""
        return self._cell

    def __reduce__(self):
        return (ObjectRefGenerator, (self._cell, self._task or (), self._done))

    def __repr__(self):
        return "ObjectRefGenerator(%s)" % (self._cell.hex() if self._cell else "finished")


class DynamicObjectRefGenerator:
    """num_returns="dynamic": the value of the task's one return, a sequence
    of refs to every value it yielded (an error, if it raised, is the last)."""

    def __init__(self, refs):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)

    def __getitem__(self, i):
        return self._refs[i]

    def __reduce__(self):
        return (DynamicObjectRefGenerator, (self._refs,))

    def __repr__(self):
        return "DynamicObjectRefGenerator(%d refs)" % len(self._refs)


