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
