"""Utilities built on nanoray's public API, under Ray's module paths
(``nanoray.util.ActorPool``, ``nanoray.util.queue.Queue``).

Importing this package starts nothing: the runtime starts at the first API
call, as it does for ``import nanoray``.  ``nanoray.util.queue`` is imported
on its own (``from nanoray.util.queue import Queue``), as in Ray.
"""

from nanoray.util.actor_pool import ActorPool

__all__ = ["ActorPool"]
