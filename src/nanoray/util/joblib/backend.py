"""The joblib backend behind nanoray.util.joblib.register_ray().

As joblib's own loky backend keeps its executor between Parallel calls,
this backend keeps one nanoray Pool per (n_jobs, ray_remote_args) for the
life of the runtime: a Parallel call then costs no process start-up.  A
call that fails (joblib aborts it) ends that pool, and the next call
starts a fresh one.  nanoray.shutdown() ends them all.
"""

import threading

from joblib._parallel_backends import (AutoBatchingMixin, ParallelBackendBase,
                                       PoolManagerMixin)

import nanoray
from nanoray.util.multiprocessing import Pool

_shared = {}                     # (n_jobs, remote args) -> (pool, the runtime it runs on)
_shared_lock = threading.Lock()


def _shared_pool(n_jobs, remote_args):
    from nanoray import _api
    key = (n_jobs, repr(sorted((remote_args or {}).items())))
    with _shared_lock:
        pool, runtime = _shared.get(key, (None, None))
        if pool is None or pool._state != 0 or runtime is not _api._backend:
            pool = Pool(processes=n_jobs, ray_remote_args=remote_args)
            _shared[key] = (pool, _api._backend)
        return pool


def _drop(pool):
    with _shared_lock:
        for key, (p, _) in list(_shared.items()):
            if p is pool:
                del _shared[key]
    pool.terminate()


class NanorayBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):
    """joblib's pool-backed backend, on a nanoray Pool kept between calls."""

    supports_retrieve_callback = True
    supports_return_generator = False
    supports_timeout = True
    supports_sharedmem = False
    default_n_jobs = -1

    def __init__(self, nesting_level=None, inner_max_num_threads=None, ray_remote_args=None,
                 **kwargs):
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **kwargs)
        self.ray_remote_args = ray_remote_args

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            cpus = max(1, int(nanoray.cluster_resources().get("CPU", 1)))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
        n_jobs = self.effective_n_jobs(n_jobs)
        self._pool = _shared_pool(n_jobs, self.ray_remote_args)
        self.parallel = parallel
        return n_jobs

    def terminate(self):
        self._pool = None            # the pool stays, for the next Parallel call

    def abort_everything(self, ensure_ready=True):
        if self._pool is not None:   # a failed call: its pool and work go
            _drop(self._pool)
            self._pool = None
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel,
                           **self.parallel._backend_kwargs)
