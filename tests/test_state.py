"""nanoray.util.state and `python -m nanoray status`: what runs now, with
Ray's names, read from the shared tables."""

import os
import subprocess
import sys
import time

import numpy as np

from conftest import wait_gone  # noqa: F401  (the fixtures check processes)

T = 30


def _wait_for(path):
    deadline = time.monotonic() + T
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_list_tasks_and_summary_show_what_runs_and_waits(ray, tmp_path):
    from nanoray.util.state import get_task, list_tasks, summarize_tasks
    gate = str(tmp_path / "gate")

    @ray.remote
    def blocker(gate):
        _wait_for(gate)
        return os.getpid()

    @ray.remote
    def after(x):
        return x
    running = [blocker.remote(gate) for _ in range(2)]
    queued = blocker.remote(gate)
    waiting = after.remote(running[0])
    deadline = time.monotonic() + T
    while len([t for t in list_tasks() if t.state == "RUNNING"]) < 2:
        assert time.monotonic() < deadline, list_tasks()
        time.sleep(0.02)
    tasks = list_tasks()
    by_state = {}
    for t in tasks:
        by_state.setdefault((t.name, t["state"]), []).append(t)
    assert len(by_state[("blocker", "RUNNING")]) == 2
    assert len(by_state[("blocker", "PENDING_NODE_ASSIGNMENT")]) == 1
    assert len(by_state[("after", "PENDING_ARGS_AVAIL")]) == 1
    run = by_state[("blocker", "RUNNING")][0]
    assert run.type == "NORMAL_TASK" and run.worker_pid > 0 and run.job_id
    assert run.required_resources == {"CPU": 1.0}
    assert get_task(run.task_id).worker_pid == run.worker_pid
    assert [t.name for t in list_tasks(filters=[("state", "=", "PENDING_ARGS_AVAIL")])] == \
        ["after"]
    assert len(list_tasks(filters=[("name", "!=", "after")], limit=2)) == 2
    summary = summarize_tasks()["cluster"]
    assert summary["summary"]["blocker"]["state_counts"] == \
        {"RUNNING": 2, "PENDING_NODE_ASSIGNMENT": 1}
    assert summary["total_tasks"] == 4
    open(gate, "w").close()
    pids = ray.get(running + [queued], timeout=T)
    assert ray.get(waiting, timeout=T) == pids[0]
    deadline = time.monotonic() + T
    while list_tasks():                        # finished tasks leave the table
        assert time.monotonic() < deadline, list_tasks()
        time.sleep(0.02)
    assert get_task(run.task_id) is None


def test_list_tasks_names_a_named_actor_call_by_its_name_and_method(ray, tmp_path):
    from nanoray.util.state import list_tasks
    gate = str(tmp_path / "gate")

    @ray.remote
    class Waits:
        def wait(self, gate):
            _wait_for(gate)
            return 1
    a = Waits.remote()
    ref = a.wait.options(name="the-wait").remote(gate)
    deadline = time.monotonic() + T
    while not [t for t in list_tasks() if t.type == "ACTOR_TASK"]:
        assert time.monotonic() < deadline, list_tasks()
        time.sleep(0.02)
    call, = [t for t in list_tasks() if t.type == "ACTOR_TASK"]
    assert (call.name, call.func_or_class_name) == ("the-wait", "Waits.wait")
    open(gate, "w").close()
    assert ray.get(ref, timeout=T) == 1
    ray.kill(a)


def test_list_actors_workers_and_objects(ray):
    from nanoray.util.state import get_actor, list_actors, list_objects, list_workers

    @ray.remote
    class Keeper:
        def pid(self):
            return os.getpid()

        def nap(self, s):
            time.sleep(s)
    k = Keeper.options(name="keeper", namespace="ns").remote()
    pid = ray.get(k.pid.remote(), timeout=T)
    from nanoray.util.state import list_tasks
    naps = [k.nap.remote(0.5), k.nap.remote(0)]          # one runs, one waits behind it
    time.sleep(0.2)
    calls = [t for t in list_tasks() if t.type == "ACTOR_TASK"]
    assert sorted((t.name, t.func_or_class_name, t.state) for t in calls) == [
        ("Keeper.nap", "Keeper.nap", "PENDING_NODE_ASSIGNMENT"),
        ("Keeper.nap", "Keeper.nap", "RUNNING")], calls
    ray.get(naps, timeout=T)
    actors = {a.actor_id: a for a in list_actors()}
    a = actors[k._actor_id.hex()]
    assert (a.class_name, a.state, a.pid, a.name, a.ray_namespace) == \
        ("Keeper", "ALIVE", pid, "keeper", "ns")
    assert get_actor(a.actor_id).pid == pid
    from nanoray.util.state import summarize_actors, summarize_objects
    summary = summarize_actors()["cluster"]
    assert summary["summary"]["Keeper"]["state_counts"].get("ALIVE", 0) >= 1
    assert summary["total_actors"] == len(actors) and summary["summary_by"] == "class"
    workers = list_workers(limit=None)
    assert any(w.worker_type == "DRIVER" and w.pid == os.getpid() for w in workers)
    assert any(w.pid == pid and w.is_actor for w in workers)
    ray.kill(k)
    deadline = time.monotonic() + T
    while get_actor(a.actor_id) is not None and get_actor(a.actor_id).state != "DEAD":
        assert time.monotonic() < deadline
        time.sleep(0.02)

    big = ray.put(np.zeros(1 << 20))
    objs = {o.object_id: o for o in list_objects(limit=None)}
    o = objs[big.hex()]
    assert o.object_size >= 8 << 20 and o.task_status == "FINISHED"
    assert o.reference_count >= 1
    summary = summarize_objects()["cluster"]
    assert summary["total_objects"] == len(objs) and summary["total_size_mb"] >= 8
    assert summary["summary"]["disabled"]["task_state_counts"]["FINISHED"] >= 1
    del big


def test_status_command_reads_a_running_program(ray):
    @ray.remote
    def noop():
        return 1
    ray.get(noop.remote(), timeout=T)
    out = subprocess.run([sys.executable, "-m", "nanoray", "status"], capture_output=True,
                         text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    assert "(driver pid %d)" % os.getpid() in out.stdout, out.stdout
    assert "CPUs: 2 total" in out.stdout and "tasks: " in out.stdout


def test_timeline_records_each_task_and_call_for_perfetto(ray, tmp_path):
    import json

    @ray.remote
    def sleepy(a):
        time.sleep(0.05)
        return np.zeros(1 << 16)

    @ray.remote
    def fails():
        raise ValueError("no")

    @ray.remote
    class Acc:
        def add(self, x):
            return x + 1
    arr = np.ones(1 << 17)
    refs = [sleepy.remote(arr) for _ in range(3)]
    acc = Acc.remote()
    pids = set()
    assert ray.get([acc.add.remote(i) for i in range(4)], timeout=T) == [1, 2, 3, 4]
    ray.get(refs, timeout=T)
    try:
        ray.get(fails.remote(), timeout=T)
    except ValueError:
        pass
    # A task's event is written just after its result is sealed: the last
    # one may land a moment after get() returns.
    names = ("sleepy", "fails", "Acc.add", "Acc.__init__")
    deadline = time.monotonic() + T
    while not set(names) <= {e["name"] for e in ray.timeline()}:
        assert time.monotonic() < deadline, ray.timeline()
        time.sleep(0.01)
    path = tmp_path / "trace.json"
    assert ray.timeline(str(path)) is None
    events = json.loads(path.read_text())
    mine = [e for e in events if e["name"] in names]
    by_name = {}
    for e in mine:
        by_name.setdefault(e["name"], []).append(e)
        assert e["ph"] == "X" and e["tid"].startswith("worker ")
        pids.add(e["tid"])
    assert len(by_name["sleepy"]) == 3 and len(by_name["Acc.add"]) == 4
    for e in by_name["sleepy"]:
        assert e["dur"] >= 45_000                       # microseconds
        assert e["args"]["bytes_in"] >= arr.nbytes
        assert e["args"]["bytes_out"] >= (1 << 16) * 8
        assert e["cat"] == "task" and not e["args"]["failed"]
    assert by_name["fails"][0]["args"]["failed"]
    assert by_name["Acc.add"][0]["cat"] == "actor_task"
    assert len(ray.timeline()) >= len(mine)                  # also returned as a list


def _nap(s):
    time.sleep(s)
    return s


def _square(x):
    return x * x


def test_progress_bars_for_get_wait_and_pool_map(ray, capsys):
    import pytest

    from nanoray import exceptions
    from nanoray.util.multiprocessing import Pool
    nap = ray.remote(_nap)
    refs = [nap.remote(0.05) for _ in range(10)]
    assert ray.get(refs, progress=True) == [0.05] * 10
    err = capsys.readouterr().err
    assert "get" in err and "10/10" in err, err
    ready, rest = ray.wait(refs, num_returns=5, progress="waiting")
    assert len(ready) == 5 and len(rest) == 5
    assert "waiting" in capsys.readouterr().err
    with Pool(2) as p:
        assert p.map(_square, range(20), chunksize=3, progress=True) == \
            [i * i for i in range(20)]
    assert "20/20" in capsys.readouterr().err
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get([nap.remote(2.0)], timeout=0.2, progress=True)


def test_without_tqdm_progress_draws_a_plain_bar(ray, capsys, monkeypatch):
    # tqdm is a test dependency: hide it, so the plain bar is the one drawn.
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    nap = ray.remote(_nap)
    assert ray.get([nap.remote(0.01) for _ in range(4)], progress="plain") == [0.01] * 4
    err = capsys.readouterr().err
    assert "plain: 100%% [%s] 4/4" % ("#" * 30) in err, err


def test_snapshots_survive_a_garbage_collection_that_frees_refs(ray):
    # A collection while a snapshot held the region lock used to free a ref
    # whose decref took the lock again: the runtime froze.  Run it apart.
    script = (
        "import gc, nanoray as ray\n"
        "from nanoray._core import _runtime as rt\n"
        "from nanoray.util.state import list_actors, list_workers\n"
        "ray.init(num_cpus=1)\n"
        "reg = ray._api._backend.region\n"
        "for _ in range(3):\n"
        "    gc.disable()\n"
        "    for _ in range(5):\n"
        "        c = [ray.put(1)]; c.append(c); del c\n"
        "    gc.set_threshold(max(1, gc.get_count()[0]))\n"
        "    gc.enable()\n"
        "    rt.proc_rows(reg); rt.actor_names(); reg.verify(); list_workers(); list_actors()\n"
        "gc.set_threshold(700); gc.collect()\n"
        "print('objects', reg.stats()['objects'])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0 and "objects 0" in out.stdout, (out.stdout, out.stderr)


def test_list_objects_filters_before_the_limit(ray):
    from nanoray.util.state import list_objects
    many = [ray.put(i) for i in range(300)]
    last = many[-1].hex()
    assert [o.object_id for o in list_objects(filters=[("object_id", "=", last)], limit=5)] \
        == [last]
    assert len(list_objects(limit=5)) == 5
    del many


def _fails_first(i):
    if i == 0:
        raise ValueError("first")
    time.sleep(0.05)
    return i


def test_a_progress_bar_outlives_a_failed_map(ray, capsys):
    import pytest

    from nanoray.util.multiprocessing import Pool
    with Pool(2) as p:
        with pytest.raises(ValueError, match="first"):
            p.map(_fails_first, range(8), chunksize=1, progress=True)
        time.sleep(0.5)                        # the other chunks arrive after the failure
        assert p.map(_square, range(4), progress=True) == [0, 1, 4, 9]


def test_status_reports_a_lock_held_too_long_instead_of_hanging():
    # A region whose lock this process holds (a stopped or stuck holder, as
    # seen from outside): status must say so within seconds.
    from nanoray._core._ctest import CRegion
    region = CRegion()
    region.lock()
    try:
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "nanoray", "status"], capture_output=True,
                             text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert time.monotonic() - t0 < 30
    finally:
        region.unlock()
    assert "held for over 3 s by pid %d (running); no snapshot" % os.getpid() in out.stdout, \
        (out.stdout, out.stderr)
