"""Ray Core's resources, scheduling strategies and placement groups, written
once against the public API only (``ray`` is the nanoray module here), as
test_conformance_core.py is: GPUs and custom resources, infeasible tasks and
actors, the one node's view, and placement groups with their bundles."""

import contextlib
import os
import sys
import textwrap
import time

import pytest

from conftest import (conformance_fixtures, infeasible_warning, local_only, on_ray, touch,
                      touches, wait_for_path)
from nanoray import exceptions


# Each test runs on the local backend, then on Ray when it is installed.
ray, fresh = conformance_fixtures()


def _eventually(check, timeout=10):
    """Ray's resource view is refreshed asynchronously: poll it."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never became true"
        time.sleep(0.05)


# -- resources ------------------------------------------------------------------


def test_gpu_tasks_get_their_devices_and_wait_for_them(fresh, tmp_path):
    ray = fresh(num_cpus=2, num_gpus=2, resources={"disk": 1})
    assert ray.cluster_resources()["GPU"] == 2.0 and ray.cluster_resources()["disk"] == 1.0
    assert any(k.startswith("node:") for k in ray.cluster_resources())

    @ray.remote(num_gpus=1, num_cpus=0)
    def device(seconds):
        time.sleep(seconds)
        ctx = ray.get_runtime_context()
        return (ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"),
                ctx.get_assigned_resources())
    out = ray.get([device.remote(0.3) for _ in range(4)], timeout=30)
    for ids, visible, assigned in out:
        assert len(ids) == 1 and visible == str(ids[0]) and assigned == {"GPU": 1.0}
    assert sorted(i for ids, _, _ in out for i in ids) == [0, 0, 1, 1]

    @ray.remote(num_gpus=2, num_cpus=0)
    def both():
        return sorted(ray.get_gpu_ids()), os.environ.get("CUDA_VISIBLE_DEVICES")
    assert ray.get(both.remote(), timeout=30) == ([0, 1], "0,1")

    @ray.remote(num_gpus=0.5, num_cpus=0)
    def half(started, gate):
        touch(started)
        wait_for_path(gate)
        return ray.get_gpu_ids()
    # Four halves share two devices: all four run at once (each waits for
    # a gate opened only once all four have started).
    started, gate = str(tmp_path / "started"), str(tmp_path / "gate")
    refs = [half.remote(started, gate) for _ in range(4)]
    deadline = time.monotonic() + 30
    while touches(started) < 4:
        assert time.monotonic() < deadline, "four half-GPU tasks did not run at once"
        time.sleep(0.01)
    touch(gate)
    ids = ray.get(refs, timeout=30)
    assert sorted(i[0] for i in ids) == [0, 0, 1, 1]
    deadline = time.monotonic() + 10                  # given back as each worker finishes
    while ray.available_resources().get("GPU") != 2.0:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.01)

    @ray.remote
    def plain():
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ray.get_gpu_ids()
    assert ray.get(plain.remote(), timeout=30) == (None, [])


def test_a_task_waits_for_a_custom_resource_and_others_pass_it(fresh, tmp_path):
    ray = fresh(num_cpus=2, resources={"license": 1})
    gate = str(tmp_path / "gate")

    @ray.remote(resources={"license": 1}, num_cpus=0)
    def licensed(gate):
        wait_for_path(gate)
        return "licensed"

    @ray.remote
    def free(i):
        return i
    first = licensed.remote(gate)
    second = licensed.remote(gate)                  # waits for the one license
    assert ray.get([free.remote(i) for i in range(6)], timeout=30) == list(range(6))
    assert ray.wait([second], timeout=0.3)[0] == []
    touch(gate)
    assert ray.get([first, second], timeout=30) == ["licensed", "licensed"]


def test_infeasible_tasks_stay_pending_with_a_warning_and_block_nothing(ray):
    @ray.remote(resources={"unobtainium": 1})
    def never():
        return 1
    with infeasible_warning("cannot be scheduled"):
        stuck = never.remote()
    with infeasible_warning("cannot be scheduled"):
        big = ray.remote(num_gpus=8)(lambda: 1).remote()
    assert ray.get([ray.remote(lambda i: i * 2).remote(i) for i in range(5)], timeout=30) == \
        [0, 2, 4, 6, 8]
    assert ray.wait([stuck, big], timeout=0.3)[0] == []
    ray.cancel(stuck)
    ray.cancel(big)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(stuck, timeout=30)


def test_a_task_asking_for_no_cpus_runs_while_actors_hold_more_than_there_are(fresh):
    ray = fresh(num_cpus=2)

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return "pong"
    holders = [Holder.remote() for _ in range(3)]      # nanoray makes the third at once
    # Two of them at least run (Ray may start any two of the three first).
    ready, _ = ray.wait([h.ping.remote() for h in holders], num_returns=2, timeout=60)
    assert ray.get(ready, timeout=30) == ["pong"] * 2

    @ray.remote(num_cpus=0)
    def free():
        return "ran"
    assert ray.get(free.remote(), timeout=30) == "ran"
    assert ray.get(free.options(resources={}).remote(), timeout=30) == "ran"
    for h in holders:
        ray.kill(h)


def test_actor_holds_its_gpu_for_life(fresh):
    ray = fresh(num_cpus=2, num_gpus=1)

    @ray.remote(num_gpus=1)
    class Trainer:
        def devices(self):
            return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")
    t = Trainer.remote()
    assert ray.get(t.devices.remote(), timeout=30) == ([0], "0")
    _eventually(lambda: "GPU" not in ray.available_resources())

    @ray.remote(num_gpus=1, num_cpus=0)
    def wants_gpu():
        return 1
    waiting = wants_gpu.remote()
    assert ray.wait([waiting], timeout=0.3)[0] == []
    ray.kill(t)
    assert ray.get(waiting, timeout=30) == 1


def test_infeasible_actors_stay_pending_with_a_warning_until_killed(fresh):
    ray = fresh(num_cpus=2, num_gpus=1)

    @ray.remote(num_gpus=2)
    class TooManyGpus:
        def ping(self):
            return "pong"
    with infeasible_warning("actor TooManyGpus cannot be scheduled"):
        big = TooManyGpus.remote()
    with infeasible_warning("cannot be scheduled"):
        alien = TooManyGpus.options(num_gpus=0, resources={"unobtainium": 1}).remote()
    pending = big.ping.remote()
    assert ray.wait([pending, alien.ping.remote()], timeout=0.3)[0] == []
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(pending, timeout=0.1)
    # It holds nothing: other work, and a feasible actor, run meanwhile.
    assert ray.available_resources()["GPU"] == 1.0
    fits = TooManyGpus.options(num_gpus=1).remote()
    assert ray.get(fits.ping.remote(), timeout=30) == "pong"
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=30) == 7
    ray.kill(big)
    with pytest.raises(exceptions.ActorDiedError, match="killed"):
        ray.get(pending, timeout=30)
    ray.kill(alien)
    # One whose handles all go ends too: its slot is reused, nothing leaks.
    if on_ray():
        return                                 # what follows counts nanoray's slots
    before = ray._api._backend.region.stats()["actors"]
    with pytest.warns(RuntimeWarning, match="cannot be scheduled"):
        gone = TooManyGpus.options(num_gpus=3).remote()
    del gone
    deadline = time.monotonic() + 10
    while ray._api._backend.region.stats()["actors"] > before:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ray._api._backend.region.verify()["code"] == 0


def test_killing_an_infeasible_actor_with_restarts_left_keeps_it_pending(fresh):
    # As Ray: kill(no_restart=False) takes one of its restarts; it stays
    # pending and its calls wait.  With none left, it dies.
    ray = fresh(num_cpus=2, num_gpus=1)

    @ray.remote(num_gpus=2, max_restarts=1)
    class NeedsTwoGpus:
        def ping(self):
            return "pong"
    with infeasible_warning("cannot be scheduled"):
        a = NeedsTwoGpus.remote()
    pending = a.ping.remote()
    ray.kill(a, no_restart=False)
    time.sleep(0.5)
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(pending, timeout=1)
    ray.kill(a, no_restart=False)                 # no restart left
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(pending, timeout=30)


def test_nodes_and_runtime_context_describe_the_one_node(ray):
    nodes = ray.nodes()
    assert len(nodes) == 1 and nodes[0]["Alive"]
    assert nodes[0]["Resources"]["CPU"] == ray.cluster_resources()["CPU"]
    ctx = ray.get_runtime_context()
    assert ctx.get_node_id() == nodes[0]["NodeID"]
    assert ctx.get_placement_group_id() is None

    @ray.remote(num_cpus=2)
    def assigned():
        c = ray.get_runtime_context()
        return c.get_assigned_resources(), c.get_task_id() is not None, c.get_node_id()
    res, has_id, node = ray.get(assigned.remote(), timeout=30)
    assert res == {"CPU": 2.0} and has_id and node == nodes[0]["NodeID"]


def test_a_gpu_freed_by_an_actor_is_taken_at_once(fresh):
    ray = fresh(num_cpus=2, num_gpus=1)

    @ray.remote(num_gpus=1)
    class Holder:
        def ready(self):
            return True

    @ray.remote(num_gpus=1, num_cpus=0)
    def after():
        return time.monotonic()
    h = Holder.remote()
    assert ray.get(h.ready.remote(), timeout=30)
    waiting = after.remote()
    time.sleep(0.5)
    t0 = time.monotonic()
    ray.kill(h)
    assert ray.get(waiting, timeout=30) - t0 < 2.0      # not a worker's idle timeout later


def test_an_oversubscribed_actor_gets_as_many_devices_as_it_asked_for(fresh, tmp_path):
    ray = fresh(num_cpus=2, num_gpus=2)
    gate = str(tmp_path / "gate")

    @ray.remote(num_gpus=1, num_cpus=0)
    def busy(gate):
        wait_for_path(gate)
    running = busy.remote(gate)
    time.sleep(0.3)

    @ray.remote(num_gpus=2)
    class Wide:
        def ids(self):
            return sorted(ray.get_gpu_ids()), os.environ.get("CUDA_VISIBLE_DEVICES")
    w = Wide.remote()
    assert ray.get(w.ids.remote(), timeout=30) == ([0, 1], "0,1")
    touch(gate)
    ray.get(running, timeout=30)


def test_gpu_ids_follow_the_drivers_visible_devices(tmp_path):
    script = tmp_path / "visible.py"
    script.write_text(textwrap.dedent("""
        import os
        import nanoray as ray
        ray.init(num_cpus=1)

        @ray.remote(num_gpus=1)
        def which():
            return tuple(ray.get_gpu_ids()), os.environ["CUDA_VISIBLE_DEVICES"]

        @ray.remote(num_gpus=1, runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": "9"}})
        def overridden():
            return os.environ["CUDA_VISIBLE_DEVICES"]

        @ray.remote
        def plain():
            return os.environ.get("CUDA_VISIBLE_DEVICES")
        print(ray.cluster_resources()["GPU"], sorted(set(ray.get([which.remote() for _ in range(8)]))))
        ray.get(overridden.remote())
        print(ray.get(plain.remote()))
        ray.shutdown()
    """))
    import subprocess
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="2,3")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    total, seen = lines[0].split(" ", 1)
    assert total == "2.0" and seen in ("[((2,), '2')]", "[((2,), '2'), ((3,), '3')]",
                                       "[((3,), '3')]"), seen
    assert lines[1] == "2,3"                              # restored, not the runtime_env's


def test_memory_asks_fit_the_total_they_equal(fresh):
    ray = fresh(num_cpus=2, memory=10 ** 9)

    @ray.remote(memory=10 ** 9)
    def all_of_it():
        return ray.get_runtime_context().get_assigned_resources()["memory"] >= 10 ** 9
    assert ray.get(all_of_it.remote(), timeout=30) is True


def test_scheduling_strategies_on_one_node(ray):
    from nanoray.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                                     PlacementGroupSchedulingStrategy)
    node = ray.get_runtime_context().get_node_id()

    @ray.remote
    def here():
        return "ran"
    assert ray.get(here.options(scheduling_strategy="SPREAD").remote(), timeout=30) == "ran"
    assert ray.get(here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote(), timeout=30) == "ran"
    assert ray.get(here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        "ab" * 28, soft=True)).remote(), timeout=30) == "ran"
    elsewhere = here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        "ab" * 28, soft=False)).remote()
    with pytest.raises(exceptions.TaskUnschedulableError, match="soft=False"):
        ray.get(elsewhere, timeout=30)

    @ray.remote
    class Pinned:
        pass
    if on_ray():
        return                 # Ray raises ActorUnschedulableError at the actor's first use
    with pytest.raises(exceptions.ActorUnschedulableError):
        Pinned.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            "ab" * 28, soft=False)).remote()
    with pytest.raises(TypeError, match="PlacementGroup"):
        here.options(scheduling_strategy=PlacementGroupSchedulingStrategy(None))



# -- placement groups -----------------------------------------------------------


def test_a_placement_group_reserves_and_its_tasks_use_the_reservation(fresh, tmp_path):
    from nanoray.util.placement_group import (get_placement_group, placement_group,
                                              placement_group_table, remove_placement_group)
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    ray = fresh(num_cpus=2, num_gpus=1)
    pg = placement_group([{"CPU": 1}, {"GPU": 1}], strategy="PACK", name="train")
    assert ray.get(pg.ready(), timeout=30) == pg and pg.wait(5)
    assert placement_group_table(pg)["state"] == "CREATED"
    assert get_placement_group("train") == pg
    free = ray.available_resources()
    assert free["CPU"] == 1.0 and "GPU" not in free          # reserved for the group
    started = str(tmp_path / "started")

    @ray.remote(num_cpus=1)
    def in_group(started):
        t = time.time()
        time.sleep(0.4)
        return t, time.time(), ray.get_runtime_context().get_placement_group_id()
    s = PlacementGroupSchedulingStrategy(pg)
    refs = [in_group.options(scheduling_strategy=s).remote(started) for _ in range(2)]
    (s1, e1, g1), (s2, e2, g2) = sorted(ray.get(refs, timeout=30))
    assert g1 == g2 == pg.id.hex()
    assert e1 <= s2                              # the group has one CPU: one at a time

    @ray.remote(num_gpus=1, num_cpus=0)
    def gpu_in_group():
        return ray.get_gpu_ids()
    assert ray.get(gpu_in_group.options(placement_group=pg).remote(), timeout=30) == [0]
    with pytest.raises(ValueError, match="out of range"):
        in_group.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 5))
    # A call must fit one bundle (the one it names, or any), as in Ray.
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        in_group.options(num_cpus=1, num_gpus=1, scheduling_strategy=s).remote(started)
    with pytest.raises(ValueError, match="cannot fit into bundle 1") \
            if not on_ray() else contextlib.nullcontext():           # Ray checks fit only without an index
        in_group.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote(
            started)

    @ray.remote(num_cpus=1, num_gpus=1)
    class TooBig:
        pass
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        TooBig.options(scheduling_strategy=s).remote()
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    deadline = time.monotonic() + 10
    while ray.available_resources().get("GPU") != 1.0 or ray.available_resources()["CPU"] != 2:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.02)


def test_each_bundle_is_a_reservation_of_its_own(fresh, tmp_path):
    """A call charged to a bundle waits while that bundle is full, though
    another has room; a call for any bundle takes one with room."""
    from nanoray.util.placement_group import placement_group, remove_placement_group
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as In
    ray = fresh(num_cpus=2)
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(30)
    gate = str(tmp_path / "gate")

    @ray.remote(num_cpus=1)
    def hold(started, gate):
        touch(started)
        wait_for_path(gate)
        return "done"
    a, b, c = (str(tmp_path / x) for x in "abc")
    first = hold.options(scheduling_strategy=In(pg, 0)).remote(a, gate)
    wait_for_path(a)
    second = hold.options(scheduling_strategy=In(pg, 0)).remote(b, gate)
    other = hold.options(scheduling_strategy=In(pg, 1)).remote(c, gate)
    wait_for_path(c)                                  # bundle 1 has room
    time.sleep(0.5)
    assert not os.path.exists(b)                      # bundle 0 has none
    touch(gate)
    assert ray.get([first, second, other], timeout=30) == ["done"] * 3

    # An actor holds bundle 0: calls for any bundle take bundle 1, one at a time.
    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return "pong"
    h = Holder.options(scheduling_strategy=In(pg, 0)).remote()
    assert ray.get(h.ping.remote(), timeout=30) == "pong"
    started, gate = str(tmp_path / "any"), str(tmp_path / "gate2")
    anys = [hold.options(scheduling_strategy=In(pg)).remote(started, gate) for _ in range(2)]
    _eventually(lambda: touches(started) == 1, timeout=30)
    time.sleep(0.5)
    assert touches(started) == 1
    touch(gate)
    assert ray.get(anys, timeout=30) == ["done"] * 2
    ray.kill(h)
    remove_placement_group(pg)


def test_an_actor_for_any_bundle_is_charged_to_one_that_reserved_enough(fresh, tmp_path):
    from nanoray.util.placement_group import placement_group, remove_placement_group
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as In
    ray = fresh(num_cpus=2, num_gpus=1)
    pg = placement_group([{"GPU": 1}, {"CPU": 1}])
    assert pg.wait(30)
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")

    @ray.remote(num_cpus=1)
    def hold(started, gate):
        touch(started)
        wait_for_path(gate)
        return "done"

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return "pong"

    @ray.remote(num_cpus=0, num_gpus=1)
    def gpu():
        return "gpu"
    busy = hold.options(scheduling_strategy=In(pg, 1)).remote(started, gate)
    wait_for_path(started)
    # Bundle 1 is busy and bundle 0 has no CPU: Ray makes the actor once
    # bundle 1 frees, nanoray at once on bundle 1; either way bundle 0's
    # GPU stays free for its own calls.
    h = Holder.options(scheduling_strategy=In(pg)).remote()
    assert ray.get(gpu.options(scheduling_strategy=In(pg, 0)).remote(), timeout=30) == "gpu"
    touch(gate)
    assert ray.get(busy, timeout=30) == "done"
    assert ray.get(h.ping.remote(), timeout=60) == "pong"
    second = str(tmp_path / "second")
    later = hold.options(scheduling_strategy=In(pg, 1)).remote(second, gate)
    time.sleep(0.5)
    assert not os.path.exists(second)          # the actor holds bundle 1's CPU
    ray.kill(h)
    assert ray.get(later, timeout=30) == "done"
    remove_placement_group(pg)


def test_more_bundles_than_the_table_holds_share_one_reservation(fresh):
    import warnings
    from nanoray.util.placement_group import placement_group, remove_placement_group
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as In
    ray = fresh(num_cpus=2)
    local_only("nanoray reserves at most 256 bundles at once")
    with pytest.warns(RuntimeWarning, match="share one reservation"):
        big = placement_group([{"CPU": 0.001}] * 300)
    assert big.wait(10)

    @ray.remote(num_cpus=0.001)
    def group_of():
        return ray.get_runtime_context().get_placement_group_id()
    assert ray.get([group_of.options(scheduling_strategy=In(big, i)).remote()
                    for i in (0, 299, -1)], timeout=30) == [big.id.hex()] * 3
    small = [placement_group([{"CPU": 0.001}]) for _ in range(255)]   # the table's rest
    with pytest.raises(RuntimeError, match="at most 256"):
        placement_group([{"CPU": 0.001}])
    # Every other slot free: a group's bundles need not be next to each other.
    for g in small[::2]:
        remove_placement_group(g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spread = placement_group([{"CPU": 0.5}] * 3)
    assert spread.wait(10)

    @ray.remote(num_cpus=0.5)
    def started_at():
        start = time.monotonic()
        time.sleep(0.3)
        return start
    a, b = ray.get([started_at.options(scheduling_strategy=In(spread, 0)).remote()
                    for _ in range(2)], timeout=30)
    assert abs(a - b) >= 0.25                   # bundle 0 holds one at a time
    for g in small[1::2] + [big, spread]:
        remove_placement_group(g)
    assert ray._api._backend.region.verify()["code"] == 0
    _eventually(lambda: ray.available_resources()["CPU"] == 2)


def test_a_pending_group_is_placed_when_resources_free_up(fresh):
    from nanoray.util.placement_group import placement_group, remove_placement_group
    ray = fresh(num_cpus=2)
    first = placement_group([{"CPU": 2}])
    assert first.wait(10)
    second = placement_group([{"CPU": 1}, {"CPU": 1}])
    assert not second.wait(0.3)                          # pending: the first holds all
    ready = second.ready()
    remove_placement_group(first)
    assert ray.get(ready, timeout=30) == second
    with infeasible_warning("never be placed"):
        never = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert not never.wait(0.3)
    remove_placement_group(never)
    remove_placement_group(second)
    with pytest.raises(ValueError):
        placement_group([])
    with pytest.raises(ValueError):
        placement_group([{"CPU": 1}], strategy="NOPE")


def test_removing_a_group_fails_its_waiting_tasks_and_kills_its_actors(fresh, tmp_path):
    from nanoray.util.placement_group import placement_group, remove_placement_group
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    ray = fresh(num_cpus=2)
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(10)
    s = PlacementGroupSchedulingStrategy(pg)

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return "pong"

    @ray.remote(num_cpus=1)
    def waits():
        return "ran"
    h = Holder.options(scheduling_strategy=s).remote()
    assert ray.get(h.ping.remote(), timeout=30) == "pong"
    queued = waits.options(scheduling_strategy=s).remote()   # the actor holds the CPU
    assert ray.wait([queued], timeout=0.3)[0] == []
    remove_placement_group(pg)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        ray.get(queued, timeout=30)
    with pytest.raises(exceptions.RayActorError):
        ray.get(h.ping.remote(), timeout=30)
    assert ray.get(ray.remote(lambda: "node").remote(), timeout=30) == "node"
    if not on_ray():
        assert ray._api._backend.region.verify()["code"] == 0


def test_capture_child_tasks_keeps_children_in_the_group_unless_they_opt_out(fresh):
    from nanoray.util.placement_group import get_current_placement_group, placement_group
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    ray = fresh(num_cpus=3)
    pg = placement_group([{"CPU": 2}])
    assert pg.wait(10)

    @ray.remote(num_cpus=1)
    def child():
        return ray.get_runtime_context().get_placement_group_id()

    @ray.remote(num_cpus=1)
    def parent():
        return (ray.get(child.remote()), get_current_placement_group() == pg)
    captured = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    assert ray.get(parent.options(scheduling_strategy=captured).remote(), timeout=30) == \
        (pg.id.hex(), True)
    loose = PlacementGroupSchedulingStrategy(pg)
    assert ray.get(parent.options(scheduling_strategy=loose).remote(), timeout=30) == \
        (None, True)

    # A child that names a strategy, even "DEFAULT" or placement_group=None,
    # opts out of a capturing group.
    @ray.remote(num_cpus=1)
    def choosy_parent():
        return ray.get([child.remote(), child.options(scheduling_strategy="DEFAULT").remote(),
                        child.options(placement_group=None).remote()])
    # Ray reads placement_group=None as "not given": that child stays in the group.
    assert ray.get(choosy_parent.options(scheduling_strategy=captured).remote(), timeout=30) == \
        [pg.id.hex(), None, None if not on_ray() else pg.id.hex()]

    # A captured child too big for any bundle fails at .remote(), in the parent.
    @ray.remote(num_cpus=1)
    def greedy_parent():
        return child.options(num_cpus=3).remote()
    with pytest.raises(ValueError, match=r"<locals>\.child with the placement group because "
                                         r"the resource request \{.CPU.: 3(\.0)?\}"):
        ray.get(greedy_parent.options(scheduling_strategy=captured).remote(), timeout=30)


def test_calls_into_a_removed_group_fail_instead_of_waiting(fresh):
    from nanoray.util.placement_group import (get_placement_group, placement_group,
                                              remove_placement_group)
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    ray = fresh(num_cpus=2)
    pg = placement_group([{"CPU": 1}], name="once")
    assert pg.wait(10)
    remove_placement_group(pg)
    with pytest.raises(ValueError):
        get_placement_group("once")                      # removed groups are not found
    again = placement_group([{"CPU": 1}], name="once")
    assert get_placement_group("once") == again
    if on_ray():
        return       # Ray leaves calls into a removed group pending; nanoray fails them

    @ray.remote(num_cpus=1)
    def task():
        return "ran"
    late = task.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        ray.get(late, timeout=30)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        ray.get(pg.ready(), timeout=30)
    remove_placement_group(again)


def test_actors_in_a_group_wait_for_it_and_fit_in_it(fresh, tmp_path):
    from nanoray.util.placement_group import placement_group, remove_placement_group
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    ray = fresh(num_cpus=2)
    gate = str(tmp_path / "gate")

    @ray.remote(num_cpus=2)
    def hog(gate):
        wait_for_path(gate)
    running = hog.remote(gate)
    time.sleep(0.3)
    pg = placement_group([{"CPU": 1}])                   # pending: the hog has both CPUs

    @ray.remote(num_cpus=1)
    class Member:
        def group(self):
            return ray.get_runtime_context().get_placement_group_id()
    import threading
    threading.Timer(0.5, touch, (gate,)).start()
    m = Member.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
    assert ray.get(m.group.remote(), timeout=30) == pg.id.hex()
    ray.get(running, timeout=30)
    with pytest.raises(ValueError, match="cannot fit into any bundles"):   # as in Ray
        Member.options(num_cpus=2, scheduling_strategy=PlacementGroupSchedulingStrategy(pg)) \
            .remote()
    remove_placement_group(pg)
    if on_ray():
        return       # Ray leaves an actor of a removed group pending; nanoray refuses it
    with pytest.raises(exceptions.ActorUnschedulableError, match="was removed"):
        Member.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU") != 2.0:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.02)
    assert ray._api._backend.region.verify()["code"] == 0
