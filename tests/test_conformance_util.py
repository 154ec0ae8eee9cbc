"""ray.util's helpers and the runtime context's names, written once against
the public API and run on both backends (conftest's `backend`): custom
serializers, as_completed and map_unordered, inspect_serializability,
get_node_ip_address, task and actor names, ActorAlreadyExistsError, and
max_calls (a worker leaves after that many calls of a function)."""

import asyncio
import io
import os
import threading
import time

import pytest

from conftest import conformance_fixtures, local_only, touch, wait_for_path
from nanoray import exceptions

ray, fresh = conformance_fixtures()
T = 60


class Locked:
    """Holds a lock: pickles only through a registered serializer."""

    def __init__(self, value):
        self.value = value
        self.lock = threading.Lock()


def _rebuild(value):
    return Locked(value)


def _value_of(obj):
    return obj.value


def double_locked(x):
    return x.value * 2


def gated(path, x):
    wait_for_path(path, timeout=T)
    return x


def own_names():
    import nanoray
    c = nanoray.get_runtime_context()
    return c.get_actor_name(), c.get_task_name(), c.get_task_function_name()


class Named:
    def names(self):
        return own_names()

    def fails(self):
        raise ValueError("named")


class AsyncNamed:
    async def names(self):
        return own_names()


def test_a_registered_serializer_carries_unpicklable_instances_until_deregistered(ray):
    ray.util.register_serializer(Locked, serializer=_value_of, deserializer=_rebuild)
    try:
        assert ray.get(ray.remote(double_locked).remote(Locked(21)), timeout=T) == 42
        got = ray.get(ray.put([Locked(1), {"k": Locked(2)}]), timeout=T)
        assert isinstance(got[1]["k"], Locked) and got[1]["k"].value == 2
    finally:
        ray.util.deregister_serializer(Locked)
    with pytest.raises(TypeError):
        ray.put(Locked(3))
    with pytest.raises(TypeError):
        ray.util.register_serializer(Locked, serializer=None, deserializer=_rebuild)


def test_as_completed_yields_what_finished_first(ray, tmp_path):
    gate = str(tmp_path / "gate")
    f = ray.remote(gated)
    refs = [f.remote(gate, "slow"), f.remote(str(tmp_path), "fast")]
    it = ray.util.as_completed(refs, chunk_size=1)
    assert next(it) == "fast"              # while the first is still held
    touch(gate)
    assert list(it) == ["slow"]
    refs = [f.remote(str(tmp_path), i) for i in range(5)]
    assert list(ray.util.as_completed(refs, chunk_size=2, yield_obj_refs=True)) != []
    assert sorted(ray.util.as_completed(refs, chunk_size=3)) == list(range(5))
    with pytest.raises(ValueError):
        list(ray.util.as_completed(refs, chunk_size=0))


def test_map_unordered_keeps_at_most_backpressure_size_in_flight(ray, tmp_path):
    gate = str(tmp_path / "gate")
    f = ray.remote(lambda x: gated(gate, x) if x == 0 else x)
    it = ray.util.map_unordered(f, range(6), backpressure_size=2, chunk_size=1)
    assert [next(it) for _ in range(5)] == [1, 2, 3, 4, 5]     # item 0 still held
    touch(gate)
    assert list(it) == [0]
    assert sorted(ray.util.map_unordered(f, range(20), backpressure_size=None)) == list(range(20))
    with pytest.raises(ValueError):
        list(ray.util.map_unordered(f, range(3), backpressure_size=0))


def test_inspect_serializability_names_the_unpicklable_part(ray):
    lock = threading.Lock()

    def uses_lock():
        return lock
    out = io.StringIO()
    ok, failures = ray.util.inspect_serializability(uses_lock, name="uses_lock", print_file=out)
    assert not ok and "lock" in [f.path[-1] for f in failures]
    assert "Checking Serializability" in out.getvalue()
    assert ray.util.inspect_serializability(double_locked, print_file=out) == (True, set())


def test_node_ip_address_is_a_dotted_address(ray):
    ip = ray.util.get_node_ip_address()
    assert isinstance(ip, str) and len(ip.split(".")) == 4


def test_runtime_context_names_tasks_and_actors(ray):
    assert own_names() == (None, None, None)             # the driver
    mod = __name__
    assert ray.get(ray.remote(own_names).remote(), timeout=T) == (
        None, "own_names", mod + ".own_names")
    named = ray.remote(Named).options(name="util-names").remote()
    assert ray.get(named.names.remote(), timeout=T) == (
        "util-names", "Named.names", mod + ".Named.names")
    anon = ray.remote(Named).remote()
    assert ray.get(anon.names.remote(), timeout=T)[0] == ""
    asy = ray.remote(AsyncNamed).remote()
    assert ray.get(asy.names.remote(), timeout=T)[1:] == (
        "AsyncNamed.names", mod + ".AsyncNamed.names")
    with pytest.raises(exceptions.ActorAlreadyExistsError) as info:
        ray.remote(Named).options(name="util-names").remote()
    assert isinstance(info.value, ValueError)
    ray.kill(named)
    ray.kill(anon)
    ray.kill(asy)


def raises_value_error():
    raise ValueError("named")


def test_options_name_names_the_task_and_the_actor_call(ray):
    mod = __name__
    f = ray.remote(own_names)
    assert ray.get(f.options(name="renamed").remote(), timeout=T) == (
        None, "renamed", mod + ".own_names")
    assert ray.get(f.remote(), timeout=T)[1] == "own_names"      # the plain call is not renamed
    with pytest.raises(Exception) as info:
        ray.get(ray.remote(raises_value_error).options(name="named-failure").remote(), timeout=T)
    assert "named-failure()" in str(info.value).splitlines()[0]
    with pytest.raises(TypeError):
        f.options(name=3).remote()
    a = ray.remote(Named).remote()
    assert ray.get(a.names.options(name="call-name").remote(), timeout=T)[1:] == (
        "call-name", mod + ".Named.names")
    assert ray.get(a.names.remote(), timeout=T)[1] == "Named.names"
    with pytest.raises(TypeError):
        a.names.options(name=[1]).remote()
    with pytest.raises(Exception) as info:
        ray.get(a.fails.options(name="failing-call").remote(), timeout=T)
    assert "failing-call()" in str(info.value).splitlines()[0]
    ray.kill(a)


def own_pid(x):
    return os.getpid(), x


def test_max_calls_sends_each_worker_away_after_that_many_calls(ray):
    once = ray.remote(max_calls=1)(own_pid)
    got = [ray.get(once.remote(i), timeout=T) for i in range(4)]
    assert [x for _, x in got] == [0, 1, 2, 3]
    assert len({pid for pid, _ in got}) == 4                # a fresh worker for each call
    burst = ray.get([once.remote(i) for i in range(6)], timeout=T)
    assert [x for _, x in burst] == list(range(6)) and len({p for p, _ in burst}) == 6
    twice = ray.remote(max_calls=2)(own_pid)
    pids = [ray.get(twice.remote(i), timeout=T)[0] for i in range(6)]
    assert all(pids.count(p) <= 2 for p in pids)
    plain = ray.remote(own_pid)
    assert len({p for p, _ in ray.get([plain.remote(i) for i in range(40)], timeout=T)}) <= 4
    with pytest.raises(ValueError):
        ray.remote(max_calls=-1)(own_pid)
    with pytest.raises(ValueError):
        plain.options(max_calls=1)


def fails_twice(path):
    with open(path, "a") as f:
        f.write("%d\n" % os.getpid())
    with open(path) as f:
        if len(f.read().split()) < 3:
            raise ValueError("not yet")
    return os.getpid()


def test_max_calls_sends_an_exception_retry_to_a_fresh_worker(ray, tmp_path):
    path = str(tmp_path / "attempts")
    f = ray.remote(max_calls=1, max_retries=3, retry_exceptions=True)(fails_twice)
    last = ray.get(f.remote(path), timeout=T)
    with open(path) as fh:
        attempts = [int(p) for p in fh.read().split()]
    assert len(attempts) == 3 and attempts[-1] == last
    assert len(set(attempts)) == 3                        # each attempt in its own worker
    once = ray.remote(max_calls=1)(own_pid)
    mapped = ray.get(once.map(range(6)), timeout=T)
    assert [x for _, x in mapped] == list(range(6)) and len({p for p, _ in mapped}) == 6


def test_a_gpu_function_runs_each_call_in_a_fresh_worker(fresh):
    ray = fresh(num_cpus=2, num_gpus=1)
    gpu = ray.remote(num_gpus=1)(own_pid)              # max_calls=1 by default, as in Ray
    pids = [ray.get(gpu.remote(i), timeout=T)[0] for i in range(3)]
    assert len(set(pids)) == 3
    for pid in pids:                                     # each worker left after its call
        deadline = time.monotonic() + T
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid)
    kept = ray.remote(num_gpus=1, max_calls=0)(own_pid)  # unless it says otherwise
    pid = ray.get(kept.remote(0), timeout=T)[0]
    time.sleep(0.5)
    assert _alive(pid)


def _alive(pid):
    """Whether process pid runs (a zombie, reaped soon, counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def env_seen():
    import nanoray
    return nanoray.get_runtime_context().runtime_env, os.environ.get("NANORAY_T_JOB")


def test_runtime_context_runtime_env_includes_the_jobs(fresh):
    ray = fresh(num_cpus=2, runtime_env={"env_vars": {"NANORAY_T_JOB": "1"}})
    job = {"env_vars": {"NANORAY_T_JOB": "1"}}
    assert ray.get_runtime_context().runtime_env["env_vars"] == job["env_vars"]
    env, var = ray.get(ray.remote(env_seen).remote(), timeout=T)
    assert env["env_vars"] == job["env_vars"] and var == "1"
    env, _ = ray.get(ray.remote(runtime_env={"env_vars": {"B": "2"}})(env_seen).remote(),
                     timeout=T)
    assert env["env_vars"] == {"NANORAY_T_JOB": "1", "B": "2"}


def always_fails(path):
    with open(path, "a") as f:
        f.write("%d\n" % os.getpid())
    raise ValueError("again")


def test_max_calls_counts_each_retry_as_a_call(ray, tmp_path):
    path = str(tmp_path / "attempts")
    f = ray.remote(max_calls=2, max_retries=3, retry_exceptions=True)(always_fails)
    with pytest.raises(ValueError):
        ray.get(f.remote(path), timeout=T)
    with open(path) as fh:
        pids = fh.read().split()
    assert len(pids) == 4
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]   # as Ray: A A B B
    path = str(tmp_path / "mapped")
    once = ray.remote(max_calls=1, max_retries=3, retry_exceptions=True)(always_fails)
    with pytest.raises(ValueError):
        ray.get(once.map([path]), timeout=T)
    with open(path) as fh:
        assert len(set(fh.read().split())) == 4


def test_a_large_job_runtime_env_starts(fresh):
    local_only("Ray 2.60's task did not start within a minute with env_vars this large")
    big = "x" * 66000                     # two of them pass one environment string's cap
    ray = fresh(num_cpus=1, runtime_env={"env_vars": {"NANORAY_T_A": big, "NANORAY_T_B": big}})
    env, _ = ray.get(ray.remote(env_seen).remote(), timeout=T)
    assert env["env_vars"]["NANORAY_T_A"] == big and env["env_vars"]["NANORAY_T_B"] == big


def job_env():
    return os.environ.get("NANORAY_T_JC"), os.environ.get("NANORAY_T_RE")


def test_init_takes_rays_arguments_and_a_job_config(fresh):
    from nanoray.job_config import JobConfig, LoggingConfig
    from nanoray.runtime_env import RuntimeEnv
    ray = fresh(num_cpus=2, labels={"zone": "here"}, _temp_dir=None, logging_format=None,
                logging_config=LoggingConfig(log_level="INFO"),
                job_config=JobConfig(runtime_env={"env_vars": {"NANORAY_T_JC": "1"}}))
    f = ray.remote(job_env)
    assert ray.get(f.remote(), timeout=T) == ("1", None)
    env = RuntimeEnv(env_vars={"NANORAY_T_RE": "2"})
    assert isinstance(env, dict) and env["env_vars"] == {"NANORAY_T_RE": "2"}
    assert ray.get(f.options(runtime_env=env).remote(), timeout=T) == ("1", "2")
    with pytest.raises(ValueError):
        RuntimeEnv(conda="an-env")                  # needs a machine of its own
    with pytest.raises(TypeError):
        ray.init(num_cpus=1, not_an_argument=1)


def record(counter):
    counter.inc(tags={"route": "/task"})            # a copy: the task's own values
    return counter.values()


def test_metrics_record_values_as_rays_do(ray):
    from nanoray.util.metrics import Counter, Gauge, Histogram
    c = Counter("requests", description="requests served", tag_keys=("route",))
    c.set_default_tags({"route": "/"})
    c.inc()
    c.inc(2, tags={"route": "/x"})
    assert c.values() == {(("route", "/"),): 1.0, (("route", "/x"),): 2.0}
    with pytest.raises(ValueError):
        c.inc(0)
    with pytest.raises(ValueError):
        Counter("keyed", tag_keys=("route",)).inc()     # a tag key without a value
    with pytest.raises(TypeError):
        Counter("bad", tag_keys=["route"])              # a tuple, as in Ray
    with pytest.raises(ValueError):
        Counter("")
    g = Gauge("depth")
    g.set(3)
    g.set(4.5)
    g.set(None)                                     # changes nothing, as in Ray
    assert g.values() == {(): 4.5}
    h = Histogram("latency", boundaries=[0.1, 1.0])
    for x in (0.5, 2, 1.0, 0.05):
        h.observe(x)
    (key, got), = h.values().items()
    assert key == () and got["count"] == 4 and got["buckets"] == [1, 2, 1]
    assert got["sum"] == pytest.approx(3.55)
    assert h.info["boundaries"] == [0.1, 1.0]
    with pytest.raises(ValueError):
        Histogram("no-bounds")
    assert ray.get(ray.remote(record).remote(c), timeout=T) == {(("route", "/task"),): 1.0}


class Methods:
    def ping(self):
        return "pong"


def test_runtime_context_object_refs_and_handles_answer_rays_other_questions(ray):
    ctx = ray.get_runtime_context()
    assert set(ctx.get_resource_ids()) >= {"GPU"}
    assert isinstance(ctx.get_session_name(), str) and ctx.get_session_name()
    assert os.path.isdir(ctx.get_temp_dir())
    pg = ctx.current_placement_group_id               # none (Ray: a nil id)
    assert pg is None or pg.is_nil()
    assert ctx.should_capture_child_tasks_in_placement_group is False
    assert isinstance(ctx.get_node_labels(), dict)
    assert isinstance(ctx.job_id.hex(), str) and isinstance(ctx.node_id.hex(), str)
    ref = ray.put(7)
    assert isinstance(ref.is_nil(), bool)       # (Ray 2.60 says True for a put's ref)
    assert isinstance(ref.job_id().hex(), str)

    async def awaited():
        return await ref.as_future()
    assert asyncio.run(awaited()) == 7
    handle = ray.remote(Methods).remote()
    assert "ping" in dir(handle)
    ray.kill(handle)
