"""Fixtures: a shared 2-CPU runtime per module, and checks that nothing is
left behind (no descendant processes after shutdown, nothing in /dev/shm)."""

import gc
import os
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
    (a failed test's traceback can hold refs), and no task in flight (a
    worker releases a task's arguments just after sealing its result)."""
    gc.collect()
    stats = nanoray._api._backend.region.stats
    deadline = time.monotonic() + 10
    while stats()["tasks"] and time.monotonic() < deadline:
        time.sleep(0.005)
    return stats()["objects"]
