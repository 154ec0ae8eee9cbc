"""Holding a task's BLAS and OpenMP threads to the CPUs it was granted.

A worker runs one task on the CPUs the scheduler gave it, but numpy's BLAS
starts a thread per core of the machine: two workers multiplying matrices
at once on two cores then run four threads on two CPUs.  As Ray does,
workers start with OMP_NUM_THREADS and friends set to 1 (unless the user
set them), and a task granted k CPUs has its already-loaded BLAS and
OpenMP pools set to k threads while it runs (the calls threadpoolctl makes,
found by symbol in the libraries the process has loaded).
"""

import ctypes
import os
import sys

ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")

# (set, get) symbol names of the thread-count calls, by library family.
_CALLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"),
    ("bli_thread_set_num_threads", "bli_thread_get_num_threads"),
    ("omp_set_num_threads", "omp_get_max_threads"),
)
_HINTS = ("openblas", "mkl_rt", "blis", "gomp", "libomp", "libiomp")

_user_set = {v for v in ENV_VARS if v in os.environ}
_pools = None            # [(path, set, get)] found in this process
_seen_modules = -1       # len(sys.modules) when last scanned: no import, no new library
_current = 1             # the thread count the pools have (1: preset_environment)


def preset_environment():
    """Workers start single-threaded (before numpy is imported), unless the
    user chose a count."""
    for v in ENV_VARS:
        if v not in _user_set:
            os.environ[v] = "1"


def _loaded_libraries():
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and ".so" in parts[5]:
                    paths.add(parts[5])
    except OSError:
        pass
    return paths


def _scan():
    """The thread-count calls of the pools loaded now (scanned again after
    an import: a task may load numpy itself)."""
    global _pools, _seen_modules
    if _pools is not None and len(sys.modules) == _seen_modules:
        return _pools
    pools = []
    for path in sorted(_loaded_libraries()):
        if not any(h in os.path.basename(path).lower() for h in _HINTS):
            continue
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
        except OSError:
            continue
        for set_name, get_name in _CALLS:
            setter = getattr(lib, set_name, None)
            getter = getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                pools.append((path, setter, getter))
                break
    _pools, _seen_modules = pools, len(sys.modules)
    return pools


def limit(cpus):
    """Sets every loaded pool to `cpus` threads (at least 1), unless the user
    chose a count through the environment.  Free when the count is the one
    already set (pools loaded later start at 1, from the environment)."""
    global _current
    n = max(1, int(cpus))
    if n == _current or _user_set:
        return
    for _, setter, _ in _scan():
        setter(n)
    _current = n


def threads():
    """{library path: its thread count} for the pools loaded in this process."""
    return {path: getter() for path, _, getter in _scan()}
