"""Actors in the C layer (csrc/nr_actor.c) on a private region, no processes:
creation first, calls in submission order, death and restart, names,
handle counting.  The arena must verify after every scenario."""

import pytest

from nanoray._core._ctest import NO_SUCH_PID, CRegion

OBJ_PENDING, OBJ_READY, OBJ_ERROR = 1, 2, 3
SPEC_TASK, SPEC_CREATE, SPEC_CALL = 0, 1, 2
CREATED, ORPHANED, DEAD, NO_RESTART, KILLED, DETACHED, UNORDERED = 1, 2, 4, 8, 16, 32, 64
PROC_FREE, PROC_EXITED = 0, 5


def new_actor(r, max_restarts=0, key=None, cpus=0):
    handle = r.put()
    slot, gen = r.actor_create(handle, max_restarts, cpus, key)
    assert slot > 0
    create, _ = r.submit(target=slot + 1, kind=SPEC_CREATE, nret=0)
    r.actor_started(slot)
    return handle, slot, gen, create


def call(r, handle, slot, deps=(), retries=0):
    t, rets = r.submit(deps=deps, target=slot + 1, kind=SPEC_CALL, holds=handle, cpus=0,
                       retries=retries)
    return t, rets[0]


@pytest.fixture
def r():
    region = CRegion()
    yield region
    assert region.check() == 0, "arena invariant broken"
    assert region.verify()[0] == 0, "region invariant broken"


def test_creation_runs_first_and_calls_wait_for_it(r):
    handle = r.put()
    slot, gen = r.actor_create(handle)
    c1, _ = call(r, handle, slot)                      # submitted before the creation task
    create, _ = r.submit(target=slot + 1, kind=SPEC_CREATE, nret=0)
    r.actor_started(slot)
    assert r.next(slot) == create
    assert r.next(slot) == 0                           # calls wait until __init__ ends
    r.finish(slot, create)
    assert r.actor_info(slot, gen)[1] & CREATED
    assert r.next(slot) == c1


def test_calls_keep_submission_order_while_arguments_are_pending(r):
    handle, slot, gen, create = new_actor(r)
    assert r.next(slot) == create
    r.finish(slot, create)
    dep = r.create()
    first, _ = call(r, handle, slot, deps=[dep])
    second, _ = call(r, handle, slot)
    assert r.next(slot) == 0                           # `second` may not pass `first`
    r.seal(dep)
    assert r.next(slot) == first
    assert r.next(slot) == second


def test_a_dead_actor_fails_queued_and_later_calls_with_a_copy_of_the_death(r):
    handle, slot, gen, create = new_actor(r)
    assert r.next(slot) == create
    r.finish(slot, create)
    running, ret_running = call(r, handle, slot)
    queued, ret_queued = call(r, handle, slot)
    dep = r.create()
    waiting, ret_waiting = call(r, handle, slot, deps=[dep])
    assert r.next(slot) == running
    death = r.put()
    assert r.actor_reap(slot, death) == 0              # no restarts: dead
    for ret in (ret_running, ret_queued):
        assert r.state(ret) == OBJ_ERROR
        assert r.object_payload(ret) == r.object_payload(death)
    assert r.state(ret_waiting) == OBJ_PENDING         # fails once its argument is ready
    r.seal(dep)
    assert r.state(ret_waiting) == OBJ_ERROR
    _, later = call(r, handle, slot)
    assert r.state(later) == OBJ_ERROR
    st, flags, _ = r.actor_info(slot, gen)
    assert st == PROC_EXITED and flags & DEAD          # a tombstone while a handle lives
    for o in (ret_running, ret_queued, ret_waiting, later, dep, death):
        r.decref(o)
    r.decref(handle)                                   # the last handle: the slot is freed
    assert r.actor_info(slot, gen) is None
    assert r.stats()["nobjects"] == 0 and r.stats()["ntasks"] == 0


def test_restart_runs_creation_again_then_retried_and_queued_calls(r):
    handle, slot, gen, create = new_actor(r, max_restarts=1)
    assert r.next(slot) == create
    r.finish(slot, create)
    retried, ret_retried = call(r, handle, slot, retries=1)
    failed, ret_failed = call(r, handle, slot, retries=0)
    queued, _ = call(r, handle, slot)
    assert r.next(slot) == retried
    death = r.put()
    assert r.actor_reap(slot, death) == 1              # restarting
    r.actor_started(slot, pid=NO_SUCH_PID - 1)
    assert r.next(slot) == create                      # __init__ again, first
    assert r.next(slot) == 0
    r.finish(slot, create)
    assert r.next(slot) == retried
    assert r.next(slot) == failed                      # its process is alive: it runs
    assert r.next(slot) == queued
    assert r.actor_info(slot, gen)[2] == 1             # restarted once
    assert r.actor_reap(slot, death) == 0              # out of restarts now
    assert r.state(ret_retried) == OBJ_ERROR


def test_a_running_call_without_retries_fails_on_restart(r):
    handle, slot, gen, create = new_actor(r, max_restarts=-1)
    assert r.next(slot) == create
    r.finish(slot, create)
    t, ret = call(r, handle, slot, retries=0)
    assert r.next(slot) == t
    death = r.put()
    assert r.actor_reap(slot, death) == 1
    assert r.state(ret) == OBJ_ERROR


def test_the_last_handle_orphans_the_actor_and_frees_its_slot(r):
    handle, slot, gen, create = new_actor(r)
    assert r.next(slot) == create
    r.finish(slot, create)
    t, ret = call(r, handle, slot)
    r.decref(handle)                                   # the pending call still holds it
    assert not r.actor_info(slot, gen)[1] & ORPHANED
    assert r.next(slot) == t
    r.finish(slot, t)
    assert r.actor_info(slot, gen)[1] & ORPHANED
    assert r.next_blocking(slot, 0) == -2              # exits: nothing left to run
    assert r.actor_reap(slot, 0) == 0
    assert r.actor_info(slot, gen) is None
    h2, slot2, gen2, _ = new_actor(r)
    assert slot2 == slot and gen2 == gen + 1           # reused, under a new generation


def test_names_hold_the_actor_and_go_with_its_death(r):
    handle, slot, gen, create = new_actor(r, key="ns\x1fcounter")
    assert r.actor_lookup("ns\x1fcounter") == (handle, slot, gen)
    assert r.actor_create(r.put(), 0, 0, "ns\x1fcounter") == (-2, handle)
    assert r.actor_lookup("other\x1fcounter") is None
    r.decref(handle)                                   # the name keeps it
    assert not r.actor_info(slot, gen)[1] & ORPHANED
    assert r.actor_kill(slot, gen) == NO_SUCH_PID      # its pid (signalled: nobody there)
    assert r.actor_reap(slot, r.put()) == 0
    assert r.actor_lookup("ns\x1fcounter") is None
    assert r.actor_info(slot, gen) is None             # nothing names it: slot freed


def test_actor_cpus_are_held_for_its_life(r):
    before = r.cpus_available()
    handle, slot, gen, create = new_actor(r, cpus=1000)
    assert r.cpus_available() == before - 1000
    r.actor_die(slot, gen, r.put())
    assert r.cpus_available() == before


def test_init_failure_releases_the_creation_task(r):
    handle, slot, gen, create = new_actor(r, max_restarts=3)
    t, ret = call(r, handle, slot)
    assert r.next(slot) == create
    death = r.put()
    assert r.actor_die(slot, gen, death) == 0           # __init__ raised
    r.finish(slot, create)
    assert r.state(ret) == OBJ_ERROR
    assert r.actor_reap(slot, r.put()) == 0             # dead: no restart despite max_restarts
    assert r.stats()["ntasks"] == 0


def test_one_callers_pending_call_does_not_block_another_caller(r):
    handle, slot, gen, create = new_actor(r)
    assert r.next(slot) == create
    r.finish(slot, create)
    caller_a, caller_b = r.proc(), r.proc()
    dep = r.create()
    r.set_slot(caller_a)
    a1, _ = call(r, handle, slot, deps=[dep])
    a2, _ = call(r, handle, slot)
    r.set_slot(caller_b)
    b1, _ = call(r, handle, slot)
    assert r.next(slot) == b1                          # b is not held up by a's argument
    assert r.next(slot) == 0                           # a2 still waits behind a1
    r.seal(dep)
    assert r.next(slot) == a1
    assert r.next(slot) == a2


def test_unordered_actors_run_any_ready_call(r):
    handle = r.put()
    slot, gen = r.actor_create(handle, 0, 0, None, UNORDERED)
    create, _ = r.submit(target=slot + 1, kind=SPEC_CREATE, nret=0)
    r.actor_started(slot)
    assert r.next(slot) == create
    r.finish(slot, create)
    dep = r.create()
    first, _ = call(r, handle, slot, deps=[dep])
    second, _ = call(r, handle, slot)                   # same caller, ready
    assert r.next(slot) == second
    r.seal(dep)
    assert r.next(slot) == first


def test_a_creation_task_cancelled_while_waiting_never_runs(r):
    handle = r.put()
    slot, gen = r.actor_create(handle)
    dep = r.create()
    create, _ = r.submit(deps=[dep], target=slot + 1, kind=SPEC_CREATE, nret=0)
    r.actor_started(slot)
    r.decref(handle)                                   # orphaned before __init__ could run
    assert r.next_blocking(slot, 0) == -2
    assert r.actor_reap(slot, 0) == 0                  # slot freed; creation task cancelled
    assert r.stats()["ntasks"] == 1
    r.seal(dep)                                        # released now, never queued anywhere
    assert r.stats()["ntasks"] == 0
    w = r.proc()
    assert r.next(w) == 0


def test_thousands_of_held_calls_do_not_delay_another_callers_calls(r):
    handle, slot, gen, create = new_actor(r)
    assert r.next(slot) == create
    r.finish(slot, create)
    caller_a, caller_b = r.proc(), r.proc()
    dep = r.create()
    r.set_slot(caller_a)
    held = [call(r, handle, slot, deps=[dep])[0] for _ in range(500)]
    r.set_slot(caller_b)
    b = [call(r, handle, slot)[0] for _ in range(3)]
    assert [r.next(slot) for _ in range(4)] == b + [0]      # b's calls, at once
    r.seal(dep)
    assert [r.next(slot) for _ in range(501)] == held + [0]  # then a's, in order


def test_a_callers_ready_call_waits_behind_its_held_one_then_both_run_in_order(r):
    handle, slot, gen, create = new_actor(r)
    assert r.next(slot) == create
    r.finish(slot, create)
    a, b = r.proc(), r.proc()
    d1, d2 = r.create(), r.create()
    r.set_slot(a)
    a1, _ = call(r, handle, slot, deps=[d1])
    a2, _ = call(r, handle, slot, deps=[d2])
    a3, _ = call(r, handle, slot)                            # ready, held behind a1
    r.set_slot(b)
    b1, _ = call(r, handle, slot)
    assert r.next(slot) == b1 and r.next(slot) == 0
    r.seal(d2)                                               # a2 ready, a1 still waits
    assert r.next(slot) == 0
    r.seal(d1)
    assert [r.next(slot) for _ in range(4)] == [a1, a2, a3, 0]
