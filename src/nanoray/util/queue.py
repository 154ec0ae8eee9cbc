"""Queue: a FIFO queue shared by the driver, tasks and actors, as ray.util.queue.

The items live in one async actor (_QueueActor) around an asyncio.Queue, so
a get() blocked on an empty queue is a coroutine parked in the actor's event
loop while other calls -- the put() that will wake it -- keep running.
Timeouts are kept by the actor (asyncio.wait_for), so a timed-out get()
leaves nothing behind that could swallow a later item.

A Queue object is only a handle: it pickles with its actor handle, so a
Queue passed to a task or an actor reaches the same items.

    driver / task / actor          actor process (event loop)
    q.put(x)  -- put.remote -->    await queue.put(x)   (waits while full)
    q.get()   -- get.remote -->    await queue.get()    (waits while empty)
"""

import asyncio
import queue
from collections.abc import Iterable

import nanoray

__all__ = ["Empty", "Full", "Queue"]


class Empty(queue.Empty):
    """Raised by get() on an empty queue (at once, or when the timeout passes)."""


class Full(queue.Full):
    """Raised by put() on a full queue (at once, or when the timeout passes)."""


def _check_timeout(timeout):
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class Queue:
    """A first-in, first-out queue, usable from the driver, tasks and actors.

    Behaves as asyncio.Queue / queue.Queue: put and get block (up to a
    timeout) while the queue is full or empty, or raise Full / Empty at
    once with block=False.  Batched puts and gets move many items in one call.

    Arguments:
        maxsize: the most items the queue holds; 0 means no limit.
        actor_options: options for the queue's actor, passed to
            ``.options(...)`` (for example ``{"name": "q"}``).
    """

    def __init__(self, maxsize=0, actor_options=None):
        actor_options = actor_options or {}
        self.maxsize = maxsize
        self.actor = nanoray.remote(_QueueActor).options(**actor_options).remote(self.maxsize)

    def __len__(self):
        return self.size()

    def size(self):
        """The number of items in the queue."""
        return nanoray.get(self.actor.qsize.remote())

    def qsize(self):
        """The number of items in the queue."""
        return self.size()

    def empty(self):
        """Whether the queue holds no item."""
        return nanoray.get(self.actor.empty.remote())

    def full(self):
        """Whether the queue holds maxsize items (never, for maxsize 0)."""
        return nanoray.get(self.actor.full.remote())

    def put(self, item, block=True, timeout=None):
        """Adds item at the end of the queue.

        With block (the default) waits while the queue is full: forever when
        timeout is None, else up to timeout seconds, then raises Full.
        Without block, raises Full at once if the queue is full.  A negative
        timeout raises ValueError.  Concurrent producers on a full queue are
        served in no guaranteed order."""
        if not block:
            try:
                nanoray.get(self.actor.put_nowait.remote(item))
            except asyncio.QueueFull:
                raise Full from None
        else:
            _check_timeout(timeout)
            nanoray.get(self.actor.put.remote(item, timeout))

    async def put_async(self, item, block=True, timeout=None):
        """put() for asyncio code: awaits instead of blocking the thread."""
        if not block:
            try:
                await self.actor.put_nowait.remote(item)
            except asyncio.QueueFull:
                raise Full from None
        else:
            _check_timeout(timeout)
            await self.actor.put.remote(item, timeout)

    def get(self, block=True, timeout=None):
        """Removes and returns the item at the front of the queue.

        With block (the default) waits while the queue is empty: forever when
        timeout is None, else up to timeout seconds, then raises Empty.
        Without block, raises Empty at once if the queue is empty.  A
        negative timeout raises ValueError."""
        if not block:
            try:
                return nanoray.get(self.actor.get_nowait.remote())
            except asyncio.QueueEmpty:
                raise Empty from None
        _check_timeout(timeout)
        return nanoray.get(self.actor.get.remote(timeout))

    async def get_async(self, block=True, timeout=None):
        """get() for asyncio code: awaits instead of blocking the thread."""
        if not block:
            try:
                return await self.actor.get_nowait.remote()
            except asyncio.QueueEmpty:
                raise Empty from None
        _check_timeout(timeout)
        return await self.actor.get.remote(timeout)

    def put_nowait(self, item):
        """put(item, block=False)."""
        return self.put(item, block=False)

    def put_nowait_batch(self, items):
        """Adds all items, in order, in one call -- or none of them, raising
        Full, if they do not all fit."""
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        nanoray.get(self.actor.put_nowait_batch.remote(list(items)))

    def get_nowait(self):
        """get(block=False)."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items):
        """Removes and returns num_items items, in order, in one call -- or
        none, raising Empty, if the queue holds fewer."""
        if not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        return nanoray.get(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force=False, grace_period_s=5):
        """Ends the queue's actor; its items are lost.

        With force the actor is killed at once.  Otherwise it is asked to
        exit after the calls already sent to it, and killed if it has not
        within grace_period_s seconds."""
        if self.actor is not None:
            if force:
                nanoray.kill(self.actor, no_restart=True)
            else:
                done = self.actor.__ray_terminate__.remote()
                ready, _ = nanoray.wait([done], timeout=grace_period_s)
                if not ready:
                    nanoray.kill(self.actor, no_restart=True)
        self.actor = None


class _QueueActor:
    """The queue itself.  Every method is a coroutine, so all of them run on
    the actor's event loop thread, which asyncio.Queue requires."""

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(maxsize)

    async def qsize(self):
        return self.queue.qsize()

    async def empty(self):
        return self.queue.empty()

    async def full(self):
        return self.queue.full()

    async def put(self, item, timeout=None):
        if not self.queue.full():
            # Taken at once, so timeout=0 means "if there is room" as in
            # queue.Queue (asyncio.wait_for(..., 0) would give up unstarted).
            self.queue.put_nowait(item)
            return
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full from None

    async def get(self, timeout=None):
        if not self.queue.empty():
            return self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    async def put_nowait(self, item):
        self.queue.put_nowait(item)

    async def put_nowait_batch(self, items):
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise Full("Cannot add %d items to queue of size %d and maxsize %d."
                       % (len(items), self.queue.qsize(), self.maxsize))
        for item in items:
            self.queue.put_nowait(item)

    async def get_nowait(self):
        return self.queue.get_nowait()

    async def get_nowait_batch(self, num_items):
        if num_items > self.queue.qsize():
            raise Empty("Cannot get %d items from queue of size %d."
                        % (num_items, self.queue.qsize()))
        return [self.queue.get_nowait() for _ in range(num_items)]
