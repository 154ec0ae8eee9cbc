"""A task's BLAS and OpenMP threads follow the CPUs it was granted, so
parallel tasks never oversubscribe the machine (nanoray/_threads.py)."""

import numpy as np

from nanoray._threads import threads as _threads_here


def _blas_threads():
    import numpy  # noqa: F401  (loads the BLAS)
    from nanoray._threads import threads
    return sorted(set(threads().values()))


def test_tasks_run_blas_on_the_cpus_they_were_granted(fresh):
    ray = fresh(num_cpus=2)
    if not _threads_here():
        import pytest
        pytest.skip("numpy's BLAS exposes no thread-count call here")
    one = ray.remote(_blas_threads)
    two = ray.remote(num_cpus=2)(_blas_threads)
    assert ray.get(one.remote()) == [1]
    assert ray.get(two.remote()) == [2]
    assert ray.get(one.remote()) == [1]                  # and back
    env = ray.get(ray.remote(lambda: __import__("os").environ.get("OMP_NUM_THREADS")).remote())
    assert env == "1"


def test_an_actor_runs_blas_on_the_cpus_it_holds(fresh):
    ray = fresh(num_cpus=2)
    if not _threads_here():
        import pytest
        pytest.skip("numpy's BLAS exposes no thread-count call here")

    @ray.remote(num_cpus=2)
    class Solver:
        def threads(self):
            return _blas_threads()

    assert ray.get(Solver.remote().threads.remote()) == [2]


def test_a_thread_count_the_user_set_is_left_alone(fresh, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    ray = fresh(num_cpus=2)
    env = ray.get(ray.remote(lambda: __import__("os").environ.get("OPENBLAS_NUM_THREADS")).remote())
    assert env == "2"
    a = np.ones((300, 300))
    assert ray.get(ray.remote(lambda x: float((x @ x)[0, 0])).remote(a)) == 300.0


def test_a_task_that_loads_numpy_itself_gets_the_cpus_it_was_granted():
    # The driver never imports numpy, so no worker has it loaded: the
    # library reads OMP_NUM_THREADS, which each task has set to its CPUs.
    import subprocess
    import sys
    if not _threads_here():
        import pytest
        pytest.skip("numpy's BLAS exposes no thread-count call here")
    script = """
import os, sys, nanoray as ray
def probe():
    had = "numpy" in sys.modules
    import numpy
    from nanoray._threads import threads
    return had, os.environ.get("OMP_NUM_THREADS"), sorted(set(threads().values()))
ray.init(num_cpus=2)
two = ray.remote(num_cpus=2)(probe)
one = ray.remote(num_cpus=1)(probe)
print(ray.get(two.remote())[1:], ray.get(two.remote())[1:], ray.get(one.remote())[1:])
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "('2', [2]) ('2', [2]) ('1', [1])"


def test_an_omp_num_threads_the_user_chose_is_what_tasks_get(fresh, monkeypatch):
    import os
    if not _threads_here():
        import pytest
        pytest.skip("numpy's BLAS exposes no thread-count call here")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    ray = fresh(num_cpus=2)

    def probe():
        return os.environ.get("OMP_NUM_THREADS"), _blas_threads()
    want = min(3, os.cpu_count())
    assert ray.get(ray.remote(probe).remote()) == ("3", [want])
    assert ray.get(ray.remote(num_cpus=2)(probe).remote()) == ("3", [want])
    # A runtime_env's choice over it, though numpy was loaded before it applied.
    env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    assert ray.get(ray.remote(num_cpus=2, runtime_env=env)(probe).remote()) == ("1", [1])
    assert ray.get(ray.remote(probe).remote()) == ("3", [want])


def test_a_runtime_env_omp_num_threads_holds_over_the_cpus_granted(fresh):
    import os
    if not _threads_here():
        import pytest
        pytest.skip("numpy's BLAS exposes no thread-count call here")
    ray = fresh(num_cpus=2)

    def probe():
        return os.environ.get("OMP_NUM_THREADS"), _blas_threads()
    env = {"env_vars": {"OMP_NUM_THREADS": "2"}}
    assert ray.get(ray.remote(runtime_env=env)(probe).remote()) == ("2", [min(2, os.cpu_count())])
    assert ray.get(ray.remote(probe).remote()) == ("1", [1])
