"""Fixtures: a shared 2-CPU runtime per module, and checks that nothing is
left behind (no descendant processes after shutdown, nothing in /dev/shm)."""

import contextlib
import gc
import importlib.util
import os
import sys
import time

import pytest

import nanoray


def descendants(pid=None):
    """Pids of every live descendant of pid (default: this process)."""
    pid = os.getpid() if pid is None else pid
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":               # zombies are dead; their parent reaps them
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def wait_gone(pids=None, timeout=10.0):
    """Waits until the given pids (default: all descendants) have exited; returns survivors."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in (pids if pids is not None else descendants())
                 if os.path.exists("/proc/%d" % p) and not _zombie(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        return s[s.rindex(")") + 2] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="session", autouse=True)
def dev_shm_untouched():
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield
    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert after - before == set(), "files left in /dev/shm: %s" % sorted(after - before)


@pytest.fixture(autouse=True)
def no_processes_left():
    """After every test that leaves nanoray stopped, no process of ours may remain."""
    yield
    if not nanoray.is_initialized():
        left = wait_gone()
        assert left == [], "processes left running after the test: %s" % left


@pytest.fixture(scope="module")
def ray():
    """A 2-CPU runtime shared by a module's tests, stopped (and checked) at its end."""
    nanoray.init(num_cpus=2, object_store_memory=1 << 30)
    yield nanoray
    if nanoray.is_initialized():
        assert nanoray._api._backend.region.arena_check() == 0, "store allocator corrupted"
    nanoray.shutdown()
    left = wait_gone()
    assert left == [], "processes left after shutdown: %s" % left


@pytest.fixture
def fresh():
    """A runtime of the test's own: call fresh(**init_kwargs); stopped at the end."""
    def start(**kwargs):
        if nanoray.is_initialized():
            nanoray.shutdown()
        nanoray.init(**kwargs)
        return nanoray
    yield start
    nanoray.shutdown()


def store_objects():
    """Live objects in the store once it is quiet: cyclic garbage collected
    (a failed test's traceback can hold refs), no task in flight (a worker
    releases a task's arguments just after sealing its result), and the
    count steady for 20 ms (the thread that wakes an `await ref` holds the
    ref until just after it has woken the awaiting one)."""
    gc.collect()
    stats = nanoray._api._backend.region.stats
    deadline = time.monotonic() + 10
    while stats()["tasks"] and time.monotonic() < deadline:
        time.sleep(0.005)
    n = stats()["objects"]
    while time.monotonic() < deadline:
        time.sleep(0.02)
        m = stats()["objects"]
        if m == n:
            break
        n = m
    return n


# -- both backends ---------------------------------------------------------------
# Conformance modules ask for `backend` (through their own `ray` and `fresh`
# fixtures, made by conformance_fixtures below): each of their tests runs on the
# local backend, then on Ray when Ray is installed (CI installs it when it can).

RAY_INSTALLED = importlib.util.find_spec("ray") is not None
BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.skipif(
    not RAY_INSTALLED, reason="Ray is not installed: pip install 'nanoray[ray]'"))]


@pytest.fixture(autouse=True)
def _backend_env_only_where_asked(request):
    """NANORAY_BACKEND=ray (set by `backend` for its Ray leg) must not reach
    tests that did not ask for a backend, nor the programs they start."""
    if "backend" in request.fixturenames or "NANORAY_BACKEND" not in os.environ:
        yield
        return
    old = os.environ.pop("NANORAY_BACKEND")
    try:
        yield
    finally:
        os.environ["NANORAY_BACKEND"] = old


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    """"local" or "ray".  On Ray, a call made after a test's own runtime
    stopped starts Ray again (NANORAY_BACKEND), and Ray's workers, which
    cannot import the test modules, get their functions by value."""
    if request.param == "ray":
        import ray.cloudpickle as ray_pickle
        for mod in (request.module, sys.modules[__name__]):
            ray_pickle.register_pickle_by_value(mod)
        old = os.environ.get("NANORAY_BACKEND")
        os.environ["NANORAY_BACKEND"] = "ray"
        yield "ray"
        if old is None:
            os.environ.pop("NANORAY_BACKEND", None)
        else:
            os.environ["NANORAY_BACKEND"] = old
        for mod in (request.module, sys.modules[__name__]):
            ray_pickle.unregister_pickle_by_value(mod)
    else:
        yield "local"


def on_ray():
    """True while the running test's runtime is Ray."""
    b = nanoray._api._backend
    if b is None:                   # the next call starts one (NANORAY_BACKEND tells which)
        return os.environ.get("NANORAY_BACKEND") == "ray"
    return b.remote


def ray_cancel_race():
    """In a conformance test, before it cancels a running task: stop here on
    Ray.  Ray 2.60 can abort the whole driver process when a cancel races
    the task's reply (a RAY_CHECK in TaskManager::CompletePendingTask, "Tried
    to complete task that was not pending"; seen once in clean-clone CI, and
    a sibling of the race ray-project/ray#54527 fixed), which would end the
    test run with it.  The local leg runs these tests in full."""
    if on_ray():
        pytest.skip("Ray 2.60 can abort the driver when a cancel races a running task's reply")


def local_only(why):
    """In a conformance test: stop here on Ray (for a check of nanoray's own
    internals, or a documented difference)."""
    if on_ray():
        pytest.skip("local backend only: " + why)


def start_runtime(backend, **kwargs):
    if nanoray.is_initialized():
        nanoray.shutdown()
    if backend == "ray":
        kwargs.pop("object_store_memory", None)      # Ray's store has a floor of its own
        return nanoray.init(backend="ray", **kwargs)
    return nanoray.init(**kwargs)


def stop_runtime():
    local = nanoray.is_initialized() and not on_ray()
    if local:
        assert nanoray._api._backend.region.arena_check() == 0, "store allocator corrupted"
    nanoray.shutdown()
    left = wait_gone(timeout=30)
    assert left == [], "processes left after shutdown: %s" % left


def conformance_fixtures():
    """A conformance module's fixtures, on each backend in turn: `ray`, one
    2-CPU runtime shared by the module's tests, and `fresh`, a runtime of
    the test's own (call fresh(**init_kwargs)).  Use: ray, fresh =
    conformance_fixtures()."""
    @pytest.fixture(scope="module")
    def ray(backend):
        start_runtime(backend, num_cpus=2, object_store_memory=1 << 30)
        yield nanoray
        stop_runtime()

    @pytest.fixture
    def fresh(backend):
        def start(**kwargs):
            start_runtime(backend, **kwargs)
            return nanoray
        yield start
        nanoray.shutdown()
    return ray, fresh


def touch(path):
    """Appends a byte to path (a gate, or a count of runs)."""
    with open(path, "a") as f:
        f.write("x")


def touches(path):
    """How many times path was touched (0 if never)."""
    try:
        with open(path) as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


def infeasible_warning(match=None):
    """nanoray warns (RuntimeWarning) where a call can never be scheduled;
    Ray reports it in its driver log instead, not as a Python warning."""
    if on_ray():
        return contextlib.nullcontext()
    return pytest.warns(RuntimeWarning, match=match)


def wait_for_path(path, timeout=30):
    """Until path exists (a gate or a sign that a task started), or timeout."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
