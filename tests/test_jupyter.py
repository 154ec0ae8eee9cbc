"""Works in Jupyter: functions and classes defined in a notebook run as
tasks and actors, what workers print shows in the notebook, tqdm_ray bars
reach the kernel, and nothing is left once the kernel is gone.

The notebook runs with nbclient in a kernel of this same Python (a
kernelspec written to a temporary directory, so nothing is installed for
the user) that imports the same nanoray (PYTHONPATH)."""

import os
import re
import sys

import pytest
from conftest import wait_gone

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = [
    """\
import nanoray as ray
ray.init(num_cpus=2)
print("started", ray.is_initialized())""",

    # A task that uses a notebook global, a notebook function and numpy.
    """\
import numpy as np
SCALE = 3

def helper(x):
    return x * SCALE

@ray.remote
def f(n):
    print("worker says", n)
    return float(np.arange(helper(n)).sum())

print("tasks", ray.get([f.remote(i) for i in range(4)]))""",

    # An actor of a notebook class; a notebook class as a task's result.
    """\
@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += helper(k)
        return self.n

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

@ray.remote
def mirror(p):
    return Point(p.y, p.x)

c = Counter.remote()
print("actor", ray.get([c.add.remote(1) for _ in range(3)]))
q = ray.get(mirror.remote(Point(1, 2)))
print("point", type(q).__name__, q.x, q.y, isinstance(q, Point))""",

    # tqdm_ray: a task's bar is drawn by the kernel (the driver).
    """\
import time
from nanoray.experimental import tqdm_ray

@ray.remote
def work(n):
    for _ in tqdm_ray.tqdm(range(n), desc="nb-bar"):
        pass

ray.get(work.remote(7))
deadline = time.monotonic() + 30
while not [s for s in tqdm_ray.instance().finished if s["desc"] == "nb-bar"] \\
        and time.monotonic() < deadline:
    time.sleep(0.05)
print("bar", [(s["desc"], s["x"]) for s in tqdm_ray.instance().finished])""",

    """\
ray.shutdown()
print("stopped", ray.is_initialized())""",
]


def kernel_manager_class(tmp_path):
    """Kernel managers that start a kernel of this Python: ipykernel's own
    kernelspec, written to tmp_path.  (nbclient shuts down the kernels of
    managers it made itself, not those given to it.)"""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    kernels = tmp_path / "kernels"
    write_kernel_spec(str(kernels / "nanoray-test"))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])

    class ThisPythonKernel(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(kernel_spec_manager=specs, **kwargs)

    return ThisPythonKernel


def text_of(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def run_notebook(cells, tmp_path):
    """Runs the cells in a fresh kernel, shut down at the end; returns
    (the client, each cell's printed text)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    client = nbclient.NotebookClient(nb, kernel_name="nanoray-test", timeout=120,
                                     kernel_manager_class=kernel_manager_class(tmp_path),
                                     resources={"metadata": {"path": str(tmp_path)}})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    # Under pytest ipykernel would leave the output of subprocesses (the
    # workers) alone rather than forward it to the notebook, as it does
    # for a user's notebook.
    env.pop("PYTEST_CURRENT_TEST", None)
    client.execute(env=env)                   # raises CellExecutionError if a cell fails
    return client, [text_of(cell) for cell in nb.cells]


def test_a_notebook_runs_tasks_and_actors(tmp_path):
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    client, out = run_notebook(CELLS, tmp_path)
    assert "started True" in out[0], out
    assert "tasks [0.0, 3.0, 15.0, 36.0]" in out[1], out
    assert "actor [3, 6, 9]" in out[2], out
    assert "point Point 2 1 True" in out[2], out
    assert "('nb-bar', 7)" in out[3], out
    assert "stopped False" in out[4], out
    # What the workers printed reaches the notebook with Ray's prefix (the
    # kernel forwards output written to its stdout, as it does a
    # subprocess's; it may land a cell late, as in Ray).
    everything = "".join(out)
    for i in range(4):
        assert re.search(r"^\(f pid=\d+\) worker says %d$" % i, everything, re.M), out
    shm_after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert shm_after - shm_before == set()
    # The kernel was shut down (and conftest checks that no process of ours is left).
    assert client.km is None


def test_a_kernel_shut_down_without_shutdown_leaves_nothing(tmp_path):
    # The notebook never calls ray.shutdown(): the kernel's exit ends nanoray.
    _, out = run_notebook([
        "import os, nanoray as ray\n"
        "ray.init(num_cpus=1)\n"
        "pids = ray.get([ray.remote(os.getpid).remote() for _ in range(2)])\n"
        "print('PIDS', ray._api._backend.zygote.pid, *pids)"], tmp_path)
    pids = [int(p) for p in out[0].split("PIDS")[1].split()]
    # The zygote runs in a session of its own, and would outlive a kernel
    # that did not end it: look for these processes themselves.
    assert wait_gone(pids) == [], pids
