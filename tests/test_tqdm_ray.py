"""nanoray.experimental.tqdm_ray: bars made in tasks and actors are drawn by
the driver, each process's apart from the others'; a worker that dies
mid-bar breaks nothing; shutdown leaves no thread or socket behind."""

import io
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest


@pytest.fixture(scope="module")
def tqdm_ray():
    # Imported by these tests, not when pytest collects them: the other
    # modules' runtimes start no listener.
    from nanoray.experimental import tqdm_ray
    return tqdm_ray


def tqdm(*args, **kwargs):
    from nanoray.experimental.tqdm_ray import tqdm
    return tqdm(*args, **kwargs)


def wait_for(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def finished(desc):
    """Final states of the closed bars described desc."""
    from nanoray.experimental.tqdm_ray import instance
    return [s for s in list(instance().finished) if s["desc"] == desc]


@pytest.fixture
def bars(tqdm_ray):
    """The driver's bar manager, drawing into a StringIO instead of stderr."""
    mgr = tqdm_ray.instance()
    old = mgr.file
    mgr.file = io.StringIO()
    yield mgr
    mgr.file = old


def _count(n, desc, step_s=0.0):
    for _ in tqdm(range(n), desc=desc, flush_interval_s=0.05):
        time.sleep(step_s)
    return os.getpid()


def test_a_tasks_bar_is_drawn_by_the_driver(ray, bars):
    pid = ray.get(ray.remote(_count).remote(25, "work"))
    done = wait_for(lambda: finished("work"))
    assert done, list(bars.finished)
    state = done[-1]
    assert state["x"] == 25 and state["total"] == 25 and state["closed"]
    assert not state["lost"] and state["pid"] == pid and state["name"] == "_count"
    assert "(_count pid=%d) work" % pid in bars.file.getvalue()     # drawn by tqdm
    assert not any(s["desc"] == "work" for s in bars.states())      # and gone once closed


def test_two_tasks_bars_are_kept_apart(ray, bars):
    count = ray.remote(_count)
    refs = [count.remote(30, "left", 0.03), count.remote(30, "right", 0.03)]
    # While both run, each process's bar has a line of its own.
    both = wait_for(lambda: len({s["desc"] for s in bars.states()} & {"left", "right"}) == 2
                    and bars.states())
    assert both, list(bars.finished)
    lines = {s["desc"]: s["position"] for s in both if s["desc"] in ("left", "right")}
    assert len(set(lines.values())) == 2, both
    pids = ray.get(refs)
    assert pids[0] != pids[1]
    assert wait_for(lambda: finished("left") and finished("right"))
    for desc, pid in zip(("left", "right"), pids):
        state = finished(desc)[-1]
        assert (state["x"], state["pid"], state["lost"]) == (30, pid, False)


def test_an_actors_bar_lives_across_calls(ray, bars):
    @ray.remote
    class Loader:
        def __init__(self):
            import numpy as np                # numpy's counts are sent as numbers
            self.bar = tqdm(desc="loading", total=np.int64(10), flush_interval_s=0)

        def step(self, n):
            self.bar.update(n)
            return self.bar.n

        def done(self):
            self.bar.close()
            return os.getpid()

    a = Loader.remote()
    assert ray.get(a.step.remote(3)) == 3
    seen = wait_for(lambda: [s for s in bars.states() if s["desc"] == "loading"
                             and s["x"] == 3])
    assert seen and seen[0]["name"] == "Loader"
    ray.get(a.step.remote(7))
    pid = ray.get(a.done.remote())
    assert wait_for(lambda: finished("loading"))
    state = finished("loading")[-1]
    assert (state["x"], state["total"], state["pid"]) == (10, 10, pid)
    ray.kill(a)


def test_updates_are_sent_at_most_once_per_flush_interval(ray, bars, monkeypatch):
    seen = []
    apply = bars.process_state_update
    monkeypatch.setattr(bars, "process_state_update",
                        lambda state: (state["desc"] == "fast" and seen.append(state["x"]),
                                       apply(state)))

    @ray.remote
    def fast():
        for _ in tqdm(range(20000), desc="fast", flush_interval_s=0.5):
            pass

    t0 = time.monotonic()
    ray.get(fast.remote())
    assert wait_for(lambda: finished("fast"))
    took = time.monotonic() - t0
    assert seen[-1] == 20000
    assert len(seen) <= 3 + 2 * took, (len(seen), took)   # made, each 0.5 s, closed


def test_a_worker_killed_mid_bar_breaks_nothing(ray, bars):
    @ray.remote(max_retries=0)
    def doomed():
        bar = tqdm(desc="doomed", total=10, flush_interval_s=0)
        bar.update(4)
        os._exit(1)

    from nanoray.exceptions import WorkerCrashedError
    with pytest.raises(WorkerCrashedError):
        ray.get(doomed.remote())
    # The driver finds its process gone and closes the bar.
    lost = wait_for(lambda: finished("doomed"))
    assert lost and lost[-1]["lost"] and lost[-1]["x"] == 4
    assert not any(s["desc"] == "doomed" for s in bars.states())
    # Later bars are drawn as before.
    ray.get(ray.remote(_count).remote(5, "after"))
    assert wait_for(lambda: finished("after")) and finished("after")[-1]["x"] == 5


def test_a_workers_lines_go_through_the_driver_once_it_has_bars(ray, bars, capsys):
    @ray.remote
    def talk():
        for i in tqdm(range(3), desc="talk", flush_interval_s=0):
            print("line", i)
        print("warned", file=sys.stderr)
        return os.getpid()

    pid = ray.get(talk.remote())
    out, err = "", ""

    def arrived():
        nonlocal out, err
        o, e = capsys.readouterr()
        out, err = out + o, err + e
        return "(talk pid=%d) line 2\n" % pid in out and "warned" in err

    # Printed by the driver, which hid its bars around them.
    assert wait_for(arrived), (out, err)
    assert "(talk pid=%d) line 0\n(talk pid=%d) line 1\n" % (pid, pid) in out
    assert "(talk pid=%d) warned\n" % pid in err
    assert bars.num_hides > 0


def test_a_bar_in_the_driver_draws_there(ray, bars):
    with tqdm(desc="local", total=4, flush_interval_s=0) as bar:
        for _ in range(4):
            bar.update()
        assert [s["x"] for s in bars.states() if s["desc"] == "local"] == [4]
        bar.total = 8
        bar.set_description("local2")
        bar.refresh()
        assert [s["total"] for s in bars.states() if s["desc"] == "local2"] == [8]
    state = finished("local2")[-1]
    assert state["pid"] == os.getpid() and (state["x"], state["total"]) == (4, 8)
    assert "local2" in bars.file.getvalue()
    with pytest.raises(ValueError):
        list(tqdm(desc="no iterable"))


def test_without_tqdm_a_plain_bar_is_drawn(ray, bars, monkeypatch):
    from nanoray.experimental import _bar_manager
    monkeypatch.setattr(_bar_manager, "_tqdm_class", None)    # as if tqdm were not installed
    pid = ray.get(ray.remote(_count).remote(10, "plain"))
    assert wait_for(lambda: finished("plain"))
    text = bars.file.getvalue()
    assert "(_count pid=%d) plain: 100%% [%s] 10/10" % (pid, "#" * 30) in text, text


def test_safe_print_hides_and_redraws_the_bars(ray, bars, tqdm_ray, capsys):
    bar = tqdm(desc="shown", total=3, flush_interval_s=0)
    hides = bars.num_hides
    tqdm_ray.safe_print("between bars")
    assert bars.num_hides == hides + 1 and not bars.in_hidden_state
    bar.close()
    assert "between bars\n" in capsys.readouterr().out


def _bar_socket_bound(session):
    with open("/proc/net/unix") as f:
        return ("@nanoray-%016x-bars" % session) in f.read()


def test_shutdown_leaves_no_thread_or_socket(fresh, bars, tqdm_ray):
    ray = fresh(num_cpus=1)
    session = ray._api._backend.region.session
    assert _bar_socket_bound(session)
    ray.get(ray.remote(_count).remote(3, "last"))
    ray.shutdown()
    # What the worker sent before shutdown was drawn; then all is gone.
    assert finished("last") and finished("last")[-1]["x"] == 3
    assert tqdm_ray._listener is None
    assert not [t for t in threading.enumerate() if t.name == "nanoray-tqdm_ray"]
    assert not _bar_socket_bound(session)
    # A new runtime listens again.
    ray = fresh(num_cpus=1)
    ray.get(ray.remote(_count).remote(2, "again"))
    assert wait_for(lambda: finished("again"))


def test_a_forked_child_lets_go_of_the_listener(fresh, tqdm_ray):
    ray = fresh(num_cpus=1)
    session = ray._api._backend.region.session
    fd = tqdm_ray._listener.sock.fileno()
    pid = os.fork()
    if pid == 0:                              # the child: no listener, no copy of its socket
        try:
            os.fstat(fd)
            code = 2
        except OSError:
            code = 0 if tqdm_ray._listener is None and tqdm_ray._manager is None else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _bar_socket_bound(session)         # the parent's is untouched
    ray.get(ray.remote(_count).remote(2, "after-fork"))
    assert wait_for(lambda: finished("after-fork"))


SCRIPT = textwrap.dedent("""
    import threading
    import nanoray as ray
    ray.init(num_cpus=1)

    @ray.remote
    def count(desc):
        from nanoray.experimental.tqdm_ray import tqdm
        for _ in tqdm(range(5), desc=desc):
            pass

    # Only the task imports tqdm_ray: no driver listens; the task prints its bar.
    ray.get(count.remote("alone"))
    # Imported in the driver while nanoray runs: the driver draws the bars.
    from nanoray.experimental import tqdm_ray
    ray.get(count.remote("drawn"))
    ray.shutdown()
    print("FINISHED", [(s["desc"], s["x"]) for s in tqdm_ray.instance().finished])
    print("THREADS", sorted(t.name for t in threading.enumerate()))
""")


def test_without_a_listening_driver_the_task_prints_its_bar():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "(count pid=" in out.stderr and "alone: 100% [" in out.stderr, out.stderr
    assert "5/5" in out.stderr
    assert "FINISHED [('drawn', 5)]" in out.stdout, out.stdout
    assert "THREADS ['MainThread']" in out.stdout, out.stdout
