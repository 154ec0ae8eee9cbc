"""Holding a task's BLAS and OpenMP threads to the CPUs it was granted.

A worker runs one task on the CPUs the scheduler gave it, but numpy's BLAS
starts a thread per core of the machine: two workers multiplying matrices
at once on two cores then run four threads on two CPUs.  As Ray does, a
task granted k CPUs runs with OMP_NUM_THREADS=k (workers start at 1), which
every BLAS and OpenMP library reads when it loads and has no variable of
its own set; the pools already loaded are set to k threads while it runs
(the calls threadpoolctl makes, found by symbol in the libraries the
process has loaded).  A count the user chose wins: OMP_NUM_THREADS, or a
library's own variable (OPENBLAS_NUM_THREADS, MKL_NUM_THREADS,
BLIS_NUM_THREADS), from the driver's environment or a runtime_env.
"""

import ctypes
import os
import sys

OMP = "OMP_NUM_THREADS"
ENV_VARS = (OMP, "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")

# (set, get) symbol names of the thread-count calls, by library family, and
# the variable that family reads before OMP_NUM_THREADS.
_CALLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_",
     "OPENBLAS_NUM_THREADS"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads", "OPENBLAS_NUM_THREADS"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_", "OPENBLAS_NUM_THREADS"),
    ("openblas_set_num_threads", "openblas_get_num_threads", "OPENBLAS_NUM_THREADS"),
    ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads", "MKL_NUM_THREADS"),
    ("bli_thread_set_num_threads", "bli_thread_get_num_threads", "BLIS_NUM_THREADS"),
    ("omp_set_num_threads", "omp_get_max_threads", OMP),
)
_HINTS = ("openblas", "mkl_rt", "blis", "gomp", "libomp", "libiomp")

_pools = None            # [(path, set, get, variable)] found in this process
_seen_modules = -1       # len(sys.modules) when last scanned: no import, no new library
_ours = None             # the OMP_NUM_THREADS value this process set last (None: none)


def preset_environment():
    """Workers start single-threaded (set before numpy is imported), unless
    the user chose OMP_NUM_THREADS."""
    global _ours
    if OMP not in os.environ:
        os.environ[OMP] = _ours = "1"


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
        for set_name, get_name, var in _CALLS:
            setter = getattr(lib, set_name, None)
            getter = getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                pools.append((path, setter, getter, var))
                break
    _pools, _seen_modules = pools, len(sys.modules)
    return pools


def _chosen(var):
    """The count the user chose through var, or None (unset, unreadable, or
    the OMP_NUM_THREADS this module set)."""
    v = os.environ.get(var)
    if v is None or (var == OMP and v == _ours):
        return None
    try:
        return max(1, min(int(v), os.cpu_count() or 1))
    except ValueError:
        return None


def limit(cpus):
    """Holds the BLAS and OpenMP pools to `cpus` threads (at least 1): sets
    OMP_NUM_THREADS for the libraries loaded from now on, and the loaded
    pools' counts; a count the user chose wins (see above)."""
    global _ours
    n = max(1, int(cpus))
    omp = _chosen(OMP)
    if omp is None:
        os.environ[OMP] = _ours = str(n)
    for _, setter, _, var in _scan():
        own = _chosen(var) if var != OMP else None
        setter(own or omp or n)


def threads():
    """{library path: its thread count} for the pools loaded in this process."""
    return {path: getter() for path, _, getter, _ in _scan()}
