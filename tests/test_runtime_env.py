"""A task's runtime_env runs in workers of its own, as in Ray: what one
environment imports or reads at import time is not another's, and a task
without a runtime_env never runs in a worker that had one.  Written against
the public API; the tests that count nanoray's processes are local only."""

import os
import textwrap
import time

import pytest

from conftest import conformance_fixtures, local_only


ray, fresh = conformance_fixtures()


def _env(value):
    return {"env_vars": {"NR_RENV_VALUE": value}}


def test_tasks_of_each_runtime_env_run_in_workers_of_their_own(ray):
    @ray.remote
    def where():
        return os.getpid(), os.environ.get("NR_RENV_VALUE")

    def run(f, n=12):
        got = ray.get([f.remote() for _ in range(n)], timeout=60)
        return {pid for pid, _ in got}, {value for _, value in got}
    plain, plain_values = run(where)
    a, a_values = run(where.options(runtime_env=_env("a")))
    b, b_values = run(where.options(runtime_env=_env("b")))
    plain_again, plain_again_values = run(where)
    assert plain_values == plain_again_values == {None}
    assert a_values == {"a"} and b_values == {"b"}
    assert not (a & b) and not (a & (plain | plain_again)) and not (b & (plain | plain_again))


def test_what_a_task_reads_at_import_time_belongs_to_its_runtime_env(fresh, tmp_path):
    mods = tmp_path / "mods"
    (mods / "nr_renv_mod").mkdir(parents=True)
    (mods / "nr_renv_mod" / "__init__.py").write_text(
        "import os\nVALUE = os.environ.get('NR_RENV_VALUE')\n")
    ray = fresh(num_cpus=2, runtime_env={"py_modules": [str(mods / "nr_renv_mod")]})

    @ray.remote
    def imported_value():
        import nr_renv_mod
        return nr_renv_mod.VALUE, os.environ.get("NR_RENV_VALUE")
    for _ in range(2):                   # the same workers again: each keeps its own
        assert ray.get([imported_value.options(runtime_env=_env("a")).remote()
                        for _ in range(4)], timeout=60) == [("a", "a")] * 4
        assert ray.get([imported_value.options(runtime_env=_env("b")).remote()
                        for _ in range(4)], timeout=60) == [("b", "b")] * 4
        assert ray.get([imported_value.remote() for _ in range(4)],
                       timeout=60) == [(None, None)] * 4


def test_a_thread_an_env_task_started_keeps_its_environment(ray, tmp_path):
    out = tmp_path / "seen"

    @ray.remote
    def start_reader(path):
        import threading
        import time

        def later():
            time.sleep(0.3)              # after the task has returned
            with open(path + ".tmp", "w") as f:
                f.write(os.environ.get("NR_RENV_VALUE", "<unset>"))
            os.rename(path + ".tmp", path)
        threading.Thread(target=later).start()
        return True
    assert ray.get(start_reader.options(runtime_env=_env("kept")).remote(str(out)), timeout=60)
    deadline = time.monotonic() + 30
    while not out.exists():
        assert time.monotonic() < deadline, "the task's thread never wrote"
        time.sleep(0.02)
    assert out.read_text() == "kept"


def test_nested_calls_under_one_cpu_finish_in_and_out_of_runtime_envs(fresh):
    ray = fresh(num_cpus=1)

    @ray.remote
    def leaf(x):
        return x + 1, os.environ.get("NR_RENV_VALUE")

    @ray.remote
    def parent(n):
        # The children inherit the parent's runtime_env (theirs merged over it).
        return ray.get([leaf.remote(i) for i in range(n)], timeout=60)
    got = ray.get(parent.options(runtime_env=_env("outer")).remote(3), timeout=60)
    assert got == [(1, "outer"), (2, "outer"), (3, "outer")]
    mixed = []
    for i in range(6):                   # alternating environments on one CPU
        f = leaf if i % 2 == 0 else leaf.options(runtime_env=_env(str(i)))
        mixed.append(f.remote(i))
    assert ray.get(mixed, timeout=60) == [(i + 1, None if i % 2 == 0 else str(i))
                                          for i in range(6)]
    assert ray.get(parent.remote(2), timeout=60) == [(1, None), (2, None)]


def test_many_runtime_envs_keep_the_worker_count_bounded_and_the_region_sound(ray):
    local_only("counts nanoray's worker processes")
    import nanoray

    @ray.remote
    def value(i):
        return i, os.environ.get("NR_RENV_VALUE")
    envs = [None, "w", "x", "y", "z"]
    refs = []
    for i in range(200):
        e = envs[i % len(envs)]
        f = value if e is None else value.options(runtime_env=_env(e))
        refs.append(f.remote(i))
    assert ray.get(refs, timeout=120) == [(i, envs[i % len(envs)]) for i in range(200)]
    region = nanoray._api._backend.region
    # 2 CPUs: at most two workers per environment ran at once, and a
    # keyed worker is reused rather than replaced.
    assert region.stats()["workers"] <= 2 * len(envs)
    assert region.verify()["code"] == 0


def test_map_with_a_runtime_env_runs_in_its_workers(ray):
    @ray.remote(runtime_env=_env("mapped"))
    def value(i):
        return i * 2, os.environ.get("NR_RENV_VALUE")
    assert ray.get(value.map(range(40)), timeout=60) == [(2 * i, "mapped") for i in range(40)]


def test_an_env_task_whose_setup_fails_leaves_the_next_one_of_that_env_working(ray, tmp_path):
    local_only("Ray checks a working_dir path at .remote(), not when the task runs")
    from nanoray import exceptions
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "nr_renv_wd_mod.py").write_text(textwrap.dedent("""
        VALUE = "from the working_dir"
    """))

    @ray.remote
    def read():
        import nr_renv_wd_mod
        return nr_renv_wd_mod.VALUE, os.getcwd()
    f = read.options(runtime_env={"working_dir": str(wd)})
    hidden = tmp_path / "hidden"
    wd.rename(hidden)
    with pytest.raises(exceptions.RuntimeEnvSetupError):
        ray.get(f.remote(), timeout=60)
    hidden.rename(wd)
    assert ray.get(f.remote(), timeout=60) == ("from the working_dir", str(wd))


def test_at_the_worker_limit_a_new_environment_takes_an_idle_workers_place(fresh):
    local_only("_max_workers is nanoray's own")
    ray = fresh(num_cpus=2, _max_workers=3)

    @ray.remote
    def where():
        return os.getpid(), os.environ.get("NR_RENV_VALUE")
    seen = {}
    start = time.monotonic()
    for round_ in range(2):
        for i in range(6):               # twice as many environments as workers
            pid, value = ray.get(where.options(runtime_env=_env(str(i))).remote(), timeout=8)
            assert value == str(i)
            assert seen.setdefault(pid, value) == value       # a worker keeps its environment
        assert ray.get(where.remote(), timeout=8)[1] is None
    # An idle worker of another environment retires at once to make room;
    # without that, each of the 12 would wait for one to retire idle (1 s).
    assert time.monotonic() - start < 6
    import nanoray
    region = nanoray._api._backend.region
    assert region.stats()["workers"] <= 3
    assert region.verify()["code"] == 0


def test_an_idle_worker_of_a_runtime_env_retires_after_a_second(fresh):
    local_only("the pool's idle timeouts are nanoray's own")
    ray = fresh(num_cpus=2)

    @ray.remote
    def pid():
        return os.getpid()
    # Right after init: it may take the place of a floor worker still
    # starting, and it retires all the same (the floor gets a fresh one).
    import nanoray
    stats = nanoray._api._backend.region.stats
    for name in ("first", "second"):
        keyed = ray.get(pid.options(runtime_env=_env(name)).remote(), timeout=60)
        deadline = time.monotonic() + 5
        while _alive(keyed):
            assert time.monotonic() < deadline, "the idle env worker did not retire"
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while stats()["workers"] < 2:
            assert time.monotonic() < deadline, "the pool's floor was not refilled"
            time.sleep(0.05)
        plain = set(ray.get([pid.remote() for _ in range(20)], timeout=60))
        assert keyed not in plain
    time.sleep(1.5)
    assert all(_alive(p) for p in plain)      # the pool's floor stays


def test_a_new_runtime_env_does_not_wait_behind_a_backlog_of_plain_tasks(fresh):
    """Its task, and a nested one whose environment's only worker waits in
    get(), start when a CPU frees, not once the plain tasks queued after
    them have all run (2 s here)."""
    local_only("the pool's scheduling is nanoray's own")
    ray = fresh(num_cpus=2)

    @ray.remote
    def plain():
        time.sleep(0.01)

    @ray.remote
    def stamp():
        return time.monotonic(), os.environ.get("NR_RENV_VALUE")

    @ray.remote
    def parent():
        time.sleep(0.1)                  # the backlog is queued by now
        return ray.get(stamp.remote())
    ray.get([plain.remote() for _ in range(4)], timeout=60)
    for name, f in (("new", stamp), ("nested", parent)):
        ref = f.options(runtime_env=_env(name)).remote()
        time.sleep(0.02)
        backlog = [plain.remote() for _ in range(400)]
        start = time.monotonic()
        started, value = ray.get(ref, timeout=60)
        assert value == name
        assert started - start < 1.0, (name, started - start)
        ray.get(backlog, timeout=60)


def test_at_the_worker_limit_env_tasks_waiting_on_plain_work_take_no_plain_workers(fresh):
    """Two env tasks get() the last of a backlog of plain tasks, with the
    pool at its limit: no plain worker is retired to make room for them
    (that left the backlog with no worker: 'deadlock avoided'), and the
    env tasks do not fork a worker each."""
    local_only("_max_workers is nanoray's own")
    ray = fresh(num_cpus=2, _max_workers=2)

    @ray.remote
    def plain(i):
        time.sleep(0.05)
        return i, os.getpid()

    @ray.remote
    def waits(box):
        return os.environ["NR_RENV_VALUE"], ray.get(box[0])[0], os.getpid()
    ray.get([plain.remote(-1) for _ in range(8)], timeout=60)   # both workers: plain
    backlog = [plain.remote(i) for i in range(20)]
    a = waits.options(runtime_env=_env("w")).remote([backlog[-1]])
    time.sleep(0.2)
    b = waits.options(runtime_env=_env("w")).remote([backlog[-1]])
    got = ray.get([a, b], timeout=60)
    assert [g[:2] for g in got] == [("w", 19), ("w", 19)]
    pids = {pid for _, pid in ray.get(backlog, timeout=60)} | {g[2] for g in got}
    assert len(pids) <= 4


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_fan_out_under_a_runtime_env_stays_within_a_few_workers(fresh):
    local_only("counts nanoray's worker processes")
    ray = fresh(num_cpus=2)
    import threading
    import nanoray
    region = nanoray._api._backend.region

    @ray.remote
    def child():
        time.sleep(0.005)
        return 1

    @ray.remote
    def parent():
        return sum(ray.get([child.remote() for _ in range(3)], timeout=60))
    peak, stop = [0], []

    def watch():
        while not stop:
            peak[0] = max(peak[0], region.stats()["workers"])
            time.sleep(0.005)
    th = threading.Thread(target=watch)
    th.start()
    try:
        # Children inherit the parents' environment, and run before the
        # queued parents (as without one), so few parents block at once.
        got = ray.get([parent.options(runtime_env=_env("fan")).remote() for _ in range(40)],
                      timeout=120)
    finally:
        stop.append(1)
        th.join()
    assert got == [3] * 40
    assert peak[0] <= 8, peak[0]         # 4 without a runtime_env; 42 when parents went first
    assert region.verify()["code"] == 0


def test_a_nested_get_past_the_worker_limit_raises_with_a_runtime_env_too(fresh):
    local_only("_max_workers is nanoray's own")
    from nanoray import exceptions
    ray = fresh(num_cpus=1, _max_workers=1)

    @ray.remote
    def child():
        return 1

    @ray.remote
    def parent():
        return ray.get(child.remote())
    for opts in ({}, {"runtime_env": _env("nested")}):
        with pytest.raises(exceptions.RaySystemError, match="worker"):
            ray.get(parent.options(**opts).remote(), timeout=60)


def test_a_nested_get_past_the_worker_limit_raises_for_tasks_needing_resources(fresh, tmp_path):
    local_only("_max_workers is nanoray's own")
    from nanoray import exceptions
    ray = fresh(num_cpus=2, resources={"disk": 10}, _max_workers=2)

    @ray.remote(resources={"disk": 1})
    def child(i):
        return i

    @ray.remote(resources={"disk": 1})
    def parent(i, gate):
        open(os.path.join(gate, str(i)), "w").close()
        while len(os.listdir(gate)) < 2:          # both workers hold a parent
            time.sleep(0.01)
        return ray.get(child.remote(i))
    # Both workers wait on children that fit but have no worker: a deadlock.
    with pytest.raises(exceptions.RaySystemError, match="deadlock avoided"):
        ray.get([parent.remote(i, str(tmp_path)) for i in range(2)], timeout=60)


def test_a_task_whose_environment_has_an_idle_worker_never_waits_behind_another(fresh):
    local_only("_max_workers is nanoray's own")
    ray = fresh(num_cpus=2, _max_workers=2)

    @ray.remote
    def where():
        return os.getpid()
    b, c = _env("B"), _env("C")
    b_pid, c_pid = ray.get([where.options(runtime_env=b).remote(),
                            where.options(runtime_env=c).remote()], timeout=60)
    time.sleep(0.5)                      # both asleep, keyed to B and to C
    where.options(runtime_env=_env("A")).remote()   # a worker must make room for it
    # B's task runs in B's worker (or the fresh one), not behind A's: at
    # once, not after an idle worker's 1 s timeout.
    start = time.monotonic()
    assert ray.get(where.options(runtime_env=b).remote(), timeout=5) != c_pid
    assert time.monotonic() - start < 0.9


def test_a_resource_task_waiting_at_the_worker_limit_is_not_a_deadlock(fresh):
    # Both workers wait on an actor's call, which will end; a GPU task
    # waits for them: not a deadlock while an actor runs or holds calls.
    local_only("_max_workers is nanoray's own")
    ray = fresh(num_cpus=2, num_gpus=1, _max_workers=2)

    @ray.remote(num_cpus=0)
    class Slow:
        def wait(self, s):
            time.sleep(s)
            return "done"

    @ray.remote
    def waiter(a):
        return ray.get(a.wait.remote(2.5), timeout=60)

    @ray.remote(num_gpus=1)
    def gpu():
        return "gpu"
    a = Slow.remote()
    assert ray.get(a.wait.remote(0), timeout=60) == "done"
    waiting = [waiter.remote(a) for _ in range(2)]
    time.sleep(0.5)
    assert ray.get(waiting + [gpu.remote()], timeout=60) == ["done", "done", "gpu"]
