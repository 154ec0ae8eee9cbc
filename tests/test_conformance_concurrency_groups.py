"""Actors' concurrency groups, written once against the public API and run
on both backends (conftest's `backend`): a method of a group runs while the
default group is busy, each group holds its own number of calls at once
(threads for a sync actor, an event loop each for an async one), and
.options(concurrency_group=) moves one call to a group."""

import asyncio
import os
import time

import pytest

from conftest import conformance_fixtures, local_only

ray = conformance_fixtures()[0]
T = 60


def _method(**options):
    import nanoray
    return nanoray.method(**options)


class Stoppable:
    def __init__(self):
        self.stop = False

    def run(self, most=20.0):
        """Loops until request_stop runs (or `most` seconds)."""
        end = time.monotonic() + most
        while not self.stop and time.monotonic() < end:
            time.sleep(0.005)
        return self.stop

    @_method(concurrency_group="io")
    def request_stop(self):
        self.stop = True
        return "stopped"

    def set_stop(self):
        self.stop = True
        return "set"


class Counting:
    def __init__(self):
        self.active = {}
        self.peak = {}

    async def _enter(self, group):
        self.active[group] = self.active.get(group, 0) + 1
        self.peak[group] = max(self.peak.get(group, 0), self.active[group])
        await asyncio.sleep(0.1)
        self.active[group] -= 1

    @_method(concurrency_group="io")
    async def io(self):
        await self._enter("io")

    @_method(concurrency_group="one")
    async def one(self):
        await self._enter("one")

    async def other(self):
        await self._enter("default")

    def peaks(self):
        return dict(self.peak)


def test_a_method_of_another_group_runs_while_the_default_group_is_busy(ray):
    actor = ray.remote(concurrency_groups={"io": 1})(Stoppable).remote()
    running = actor.run.remote()
    assert ray.get(actor.request_stop.remote(), timeout=T) == "stopped"
    assert ray.get(running, timeout=T) is True
    running = actor.run.remote()
    moved = actor.set_stop.options(concurrency_group="io").remote()
    assert ray.get(moved, timeout=T) == "set"
    assert ray.get(running, timeout=T) is True
    ray.kill(actor)


def test_each_group_of_an_async_actor_holds_its_own_number_of_calls(ray):
    actor = ray.remote(concurrency_groups={"io": 2, "one": 1})(Counting).remote()
    ray.get([actor.io.remote() for _ in range(6)] + [actor.one.remote() for _ in range(3)]
            + [actor.other.remote() for _ in range(4)], timeout=T)
    assert ray.get(actor.peaks.remote(), timeout=T) == {"io": 2, "one": 1, "default": 4}
    ray.kill(actor)


class BlocksItsLoop:
    @_method(concurrency_group="io")
    async def blocking(self, path):
        held(path)                       # blocks this group's event loop, not awaiting
        return "unblocked"

    async def quick(self):
        return "quick"


def test_an_async_actors_group_blocking_its_loop_holds_up_no_other_group(ray, tmp_path):
    gate = str(tmp_path / "gate")
    actor = ray.remote(concurrency_groups={"io": 1})(BlocksItsLoop).remote()
    assert ray.get(actor.quick.remote(), timeout=T) == "quick"
    blocked = actor.blocking.remote(gate)
    time.sleep(0.2)
    # Each group has an event loop of its own, as in Ray.
    assert ray.get(actor.quick.remote(), timeout=T) == "quick"
    assert ray.wait([blocked], timeout=0.1)[0] == []
    open(gate, "w").close()
    assert ray.get(blocked, timeout=T) == "unblocked"
    ray.kill(actor)


def test_a_method_naming_an_undefined_group_is_refused(ray):
    local_only("Ray fails an assertion instead of raising ValueError")
    with pytest.raises(ValueError, match="nope"):
        @ray.remote(concurrency_groups={"io": 1})
        class Bad:
            @_method(concurrency_group="nope")
            def f(self):
                return 1
        Bad.remote()
    actor = ray.remote(concurrency_groups={"io": 1})(Stoppable).remote()
    with pytest.raises(ValueError, match="no concurrency group"):
        actor.set_stop.options(concurrency_group="nope")
    with pytest.raises(ValueError):
        ray.remote(concurrency_groups={"io": 0})(Stoppable)
    ray.kill(actor)


class Ordered:
    def __init__(self):
        self.log = []

    def m(self, x):
        self.log.append("m")

    def n(self):
        self.log.append("n")

    @_method(concurrency_group="io")
    def seen(self):
        return list(self.log)


def held(path):
    end = time.monotonic() + T
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.01)
    return 1


def test_groups_keep_a_sync_actors_calls_in_submission_order(ray, tmp_path):
    gate = str(tmp_path / "gate")
    actor = ray.remote(concurrency_groups={"io": 1})(Ordered).remote()
    first = actor.m.remote(ray.remote(held).remote(gate))   # waits for its argument
    second = actor.n.remote()
    time.sleep(0.3)                       # time for n to run ahead of m, were it let
    open(gate, "w").close()
    ray.get([first, second], timeout=T)
    assert ray.get(actor.seen.remote(), timeout=T) == ["m", "n"]
    ray.kill(actor)
