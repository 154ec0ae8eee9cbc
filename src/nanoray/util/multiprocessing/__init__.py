"""multiprocessing.Pool's API on nanoray, under Ray's module path
(``from nanoray.util.multiprocessing import Pool``): see pool.py."""

from multiprocessing import TimeoutError

from nanoray.util.multiprocessing.pool import AsyncResult, Pool

__all__ = ["AsyncResult", "Pool", "TimeoutError"]
