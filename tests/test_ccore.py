"""The C layer on a private region, no processes: arena, object table, queues."""

import random

import pytest

from nanoray._core._ctest import CRegion

OBJ_PENDING, OBJ_READY, OBJ_ERROR = 1, 2, 3
KIND_DRIVER, KIND_WORKER, KIND_ACTOR = 1, 2, 3


# ---------------------------------------------------------------- arena

def test_arena_random_alloc_free_keeps_invariants_and_data():
    r = CRegion(arena_bytes=8 << 20)
    rng = random.Random(1)
    live = {}
    for step in range(3000):
        if live and (rng.random() < 0.45 or len(live) > 200):
            off = rng.choice(list(live))
            size, byte = live.pop(off)
            assert r.read(off, size) == bytes([byte]) * size, "block contents changed"
            r.free(off)
        else:
            size = rng.choice([1, 8, 63, 64, 65, 1000, 4096, 70000, rng.randrange(1, 200000)])
            off = r.alloc(size)
            if off == 0:
                continue
            assert off % 64 == 0 and r.usable(off) >= size
            byte = step % 251
            r.fill(off, size, byte)
            live[off] = (size, byte)
        assert r.check() == 0, "arena invariant broken at step %d" % step
    for off in list(live):
        r.free(off)
    assert r.check() == 0
    assert r.stats()["arena_used"] == 0 and r.stats()["arena_nallocs"] == 0


def test_arena_reuses_a_freed_block_before_fresh_memory():
    r = CRegion(arena_bytes=64 << 20)
    a = r.alloc(10 << 20)
    r.alloc(100)                                    # keeps a from merging into the top
    brk = r.stats()["arena_brk"]
    r.free(a)
    assert r.alloc(10 << 20) == a                   # the warm block, not new pages
    assert r.stats()["arena_brk"] == brk


def test_arena_coalesces_neighbours():
    r = CRegion(arena_bytes=1 << 20)
    blocks = [r.alloc(100 << 10) for _ in range(9)]
    assert all(blocks) and r.alloc(200 << 10) == 0  # full
    for b in blocks[2:7]:
        r.free(b)
    assert r.check() == 0
    assert r.alloc(450 << 10) == blocks[2]          # five neighbours merged into one
    assert r.check() == 0


def test_arena_full_returns_zero_and_recovers():
    r = CRegion(arena_bytes=1 << 20)
    assert r.alloc(2 << 20) == 0
    a = r.alloc(900 << 10)
    assert a and r.alloc(900 << 10) == 0
    r.free(a)
    assert r.alloc(900 << 10) == a


# ---------------------------------------------------------------- objects

def test_small_blocks_come_from_a_per_process_cache_that_reaping_gives_back():
    r = CRegion(arena_bytes=1 << 20)
    assert r.proc(1) == 0                          # the driver's slot
    base = r.stats()
    w = r.proc()
    r.use_ledger(w)
    a = r.alloc_small(150)                 # a 256-byte class: its two entries filled, one taken
    assert r.cached() == (2 * 256, 2)
    b = r.alloc_small(448)                 # the 512-byte class
    assert r.cached() == (2 * 256 + 2 * 512, 4)
    c = r.alloc_small(16)                  # the 192-byte class is empty: a larger entry
    assert r.cached() == (2 * 256 + 2 * 512, 4) and r.usable(c) == 256 - 64
    d = r.alloc_small(16)                  # and the next larger one
    assert r.cached() == (2 * 256 + 2 * 512, 4) and r.usable(d) == 512 - 64
    e = r.alloc_small(16)                  # the larger ones all taken: its own refilled
    assert r.cached() == (2 * 256 + 2 * 512 + 2 * 192, 6) and r.usable(e) == 192 - 64
    assert len({a, b, c, d, e}) == 5 and r.alloc_small(449) not in (0,)   # larger: an ordinary block
    # Cached blocks, taken or not, are not the store's use until they hold
    # something: only the 449-byte block counts.
    assert r.stats()["arena_nallocs"] == base["arena_nallocs"] + 1
    r.free(a)                              # back to the arena, out of the cache
    assert r.cached() == (256 + 2 * 512 + 2 * 192, 5)
    r.free(e)
    assert r.cached() == (256 + 2 * 512 + 192, 4)
    assert r.alloc_small(16) != 0          # its class's other entry, no refill
    assert r.cached() == (256 + 2 * 512 + 192, 4)
    assert r.verify()[0] == 0
    r.use_ledger(None)
    r.reap(w)                     # the dead process's cache and unsealed block go back
    assert r.cached() == (0, 0)
    assert r.stats()["arena_nallocs"] == base["arena_nallocs"]
    assert r.verify()[0] == 0 and r.check() == 0


def test_object_lifecycle_and_stale_ids():
    r = CRegion()
    oid = r.put()
    assert r.state(oid) == OBJ_READY
    r.incref(oid)
    r.decref(oid)
    assert r.state(oid) == OBJ_READY
    r.decref(oid)
    assert r.state(oid) == -1                        # freed: the id is stale
    again = r.put()
    assert again != oid and r.state(oid) == -1 and r.state(again) == OBJ_READY
    assert r.stats()["nobjects"] == 1


def test_pending_object_dropped_before_seal_is_freed_at_seal():
    r = CRegion()
    oid = r.create()
    r.decref(oid)
    assert r.state(oid) == OBJ_PENDING              # the producer still writes it
    assert r.seal(oid) == 0
    assert r.state(oid) == -1 and r.stats()["nobjects"] == 0
    assert r.stats()["arena_nallocs"] == 0


def test_seal_twice_is_refused():
    r = CRegion()
    oid = r.create()
    assert r.seal(oid) == 0
    assert r.seal(oid) == 1                         # e.g. a retried task's second result
    assert r.stats()["arena_nallocs"] == 1


def test_contained_refs_live_as_long_as_their_container():
    r = CRegion()
    inner = r.put()
    outer = r.put(contained=[inner])
    r.decref(inner)
    assert r.state(inner) == OBJ_READY              # held by outer's payload
    r.decref(outer)
    assert r.state(inner) == -1 and r.state(outer) == -1
    assert r.stats()["arena_nallocs"] == 0


def test_object_table_full():
    r = CRegion(max_objects=4)
    ids = [r.put() for _ in range(4)]
    assert all(ids) and r.put() == 0
    r.decref(ids[0])
    assert r.put() != 0
    r.set_slot(r.proc(KIND_DRIVER))
    r.release(ids[1])                  # its free put off: the next put's section frees it
    assert r.releases_put_off() == 1
    assert r.put() != 0 and r.releases_put_off() == 0


def test_wait_many_counts_ready():
    r = CRegion()
    a, b = r.create(), r.create()
    assert r.wait_many([a, b], 1, 0) == (0, [False, False])
    assert r.wait(a, 1_000_000) == 1                # times out
    r.seal(b)
    assert r.wait_many([a, b], 1, 0) == (1, [False, True])
    r.seal(a, error=True)
    assert r.state(a) == OBJ_ERROR and r.wait(a, -1) == 0


# ---------------------------------------------------------------- tasks

def test_task_waits_for_its_dependencies():
    r = CRegion()
    w = r.proc()
    dep = r.create()
    t, (ret,) = r.submit(deps=[dep])
    assert r.next(w) == 0                            # not runnable yet
    r.seal(dep)
    assert r.next(w) == t
    assert r.state(ret) == OBJ_PENDING
    r.seal(ret)
    r.finish(w, t)
    r.decref(dep)
    assert r.state(dep) == -1                        # the task's count was released
    assert r.stats()["ntasks"] == 0


def test_queue_is_fifo_and_cpus_are_accounted():
    r = CRegion(cpus_milli=2000)
    w1, w2 = r.proc(), r.proc()
    t1, _ = r.submit(cpus=1000)
    t2, _ = r.submit(cpus=2000)
    t3, _ = r.submit(cpus=1000)
    assert r.next(w1) == t1 and r.cpus_available() == 1000
    assert r.next(w2) == 0                           # t2 needs 2 CPUs; FIFO holds t3 too
    r.finish(w1, t1)
    assert r.next(w2) == t2 and r.cpus_available() == 0
    assert r.next(w1) == 0
    r.block(w2)                                      # blocked in get(): lends its CPUs
    assert r.cpus_available() == 2000 and r.next(w1) == t3
    r.unblock(w2)
    assert r.cpus_available() == -1000               # over-committed until one finishes
    r.finish(w1, t3)
    r.finish(w2, t2)
    assert r.cpus_available() == 2000


def test_tasks_routed_to_one_process_skip_the_shared_queue():
    r = CRegion()
    pool, other = r.proc(), r.proc(KIND_DRIVER)       # any process with a queue of its own
    t, _ = r.submit(target=other + 1)
    assert r.next(pool) == 0
    assert r.next(other) == t
    assert r.cpus_available() == 2000                # routed tasks hold no pool CPUs
    r.finish(other, t)


def test_lost_task_is_retried_then_given_up():
    r = CRegion()
    w = r.proc()
    t, _ = r.submit(retries=1)
    assert r.next(w) == t
    assert r.reap(w) == t                            # its process died
    assert r.cpus_available() == 2000
    assert r.retry(t) == 1
    w2 = r.proc()
    assert r.next(w2) == t and r.task_attempts(t) == 2
    assert r.reap(w2) == t
    assert r.retry(t) == 0                           # no retries left


def test_dependency_shared_by_many_tasks():
    r = CRegion()
    w = r.proc()
    dep = r.create()
    tasks = [r.submit(deps=[dep, dep])[0] for _ in range(10)]
    assert r.next(w) == 0
    r.seal(dep)
    got = []
    while True:
        t = r.next(w)
        if not t:
            break
        got.append(t)
        r.finish(w, t)
    assert got == tasks


def test_task_table_full():
    r = CRegion(max_tasks=2)
    assert r.submit()[0] and r.submit()[0]
    assert r.submit()[0] == 0


@pytest.mark.parametrize("seed", range(3))
def test_random_dags_run_every_task_once(seed):
    rng = random.Random(seed)
    r = CRegion(max_objects=4096, max_tasks=4096, max_deps=8192)
    w = r.proc()
    rets = []
    for _ in range(300):
        deps = rng.sample(rets, min(len(rets), rng.randrange(0, 4)))
        t, (ret,) = r.submit(deps=deps)
        rets.append(ret)
        if rng.random() < 0.3:                       # run whatever is ready now
            t = r.next(w)
            if t:
                r.finish(w, t)
    ran = 0
    while True:
        t = r.next(w)
        if not t:
            break
        ran += 1
        r.finish(w, t)
    assert r.stats()["ntasks"] > 0                   # tasks whose results were never sealed wait
    # Seal every return in order: all dependents become runnable exactly once.
    for ret in rets:
        if r.state(ret) == OBJ_PENDING:
            r.seal(ret)
        while True:
            t = r.next(w)
            if not t:
                break
            r.finish(w, t)
    assert r.stats()["ntasks"] == 0 and r.check() == 0


def test_lock_held_by_a_dead_process_is_recovered():
    import os
    r = CRegion()
    pid = os.fork()
    if pid == 0:
        r.lock()                                     # dies holding the region lock
        os._exit(0)
    os.waitpid(pid, 0)
    oid = r.put()                                    # would hang with a plain mutex
    assert r.state(oid) == OBJ_READY
    assert r.stats()["repairs"] == 1
    assert r.check() == 0


def test_a_task_is_finished_and_the_next_taken_in_one_call_that_never_waits():
    # What a worker's loop does holding the GIL between two pipelined tasks.
    r = CRegion(cpus_milli=1000)
    w = r.proc()
    t1, _ = r.submit()
    t2, _ = r.submit()
    assert r.finish_then_next(w, 0) == t1               # nothing to finish: a take
    assert r.cpus_available() == 0 and r.stats()["nidle"] == 0
    assert r.finish_then_next(w, t1) == t2              # t1's CPU went to t2
    assert r.cpus_available() == 0 and r.stats()["ntasks"] == 1
    assert r.finish_then_next(w, t2) == 0               # nothing queued: no wait either
    assert r.cpus_available() == 1000 and r.stats()["nidle"] == 1
    assert r.stats()["ntasks"] == 0 and r.verify()[0] == 0
    t3, _ = r.submit()
    t4, _ = r.submit()
    assert r.next(w) == t3
    r.shutdown()
    assert r.finish_then_next(w, t3) == 0               # finished, but nothing taken
    assert r.stats()["ntasks"] == 1 and r.cpus_available() == 1000


def test_a_return_is_sealed_its_task_finished_and_the_next_taken_in_one_call():
    # A worker's loop after a task whose one return is a small value.
    r = CRegion(cpus_milli=1000)
    w = r.proc()
    t1, (o1,) = r.submit()
    t2, (o2,) = r.submit()
    assert r.next(w) == t1
    used = r.stats()["arena_used"]
    t, off = r.seal_finish_then_next(w, t1, o1)
    sealed = r.stats()["arena_used"] - used             # its block in, t1's spec out
    assert t == t2                                      # t1's CPU went to t2
    assert r.state(o1) == OBJ_READY and r.object_data(o1) == off
    assert r.state(o2) == OBJ_PENDING and r.stats()["ntasks"] == 1
    assert r.verify()[0] == 0
    # A refused seal (sealed before: a retried task) gives the block back,
    # and the task is finished all the same.
    assert r.seal(o2) == 0
    kept = r.object_data(o2)
    used = r.stats()["arena_used"]
    t, off = r.seal_finish_then_next(w, t2, o2)
    refused = r.stats()["arena_used"] - used            # t2's spec out, and nothing in
    assert t == 0 and r.object_data(o2) == kept != off
    assert sealed - refused == 192                      # the one block the seal kept
    assert r.stats()["ntasks"] == 0 and r.cpus_available() == 1000
    assert r.verify()[0] == 0 and r.check() == 0


def test_a_spec_copied_in_by_its_submit_takes_a_block_the_next_free_can_keep():
    # The driver's small specs: written on its stack, copied into a block
    # allocated in the submit's own section (no section of its own), from
    # its cache if it holds one, else of a size class a cache keeps.
    r = CRegion(cpus_milli=1000)
    assert r.proc(KIND_DRIVER) == 0
    w = r.proc()
    t1, (o1,) = r.submit(copy=True)
    assert r.cached() == (0, 0)                         # nothing cached, nothing refilled
    assert r.next(w) == t1 and r.stats()["ntasks"] == 1
    r.set_slot(w)                                       # the worker finishes it
    r.finish(w, t1)
    assert r.cached() == (192, 1)                       # and keeps its 192-byte block
    r.set_slot(0)
    assert r.seal(o1) == 0
    r.decref(o1)
    o = r.put(small=True)                               # a small value's block, of the
    r.decref(o)                                         # spec's class, kept once freed...
    before = r.cached()
    t2, (o2,) = r.submit(copy=True)                     # ...is the next spec's: no new block
    assert r.cached() == (before[0] - 192, before[1] - 1)
    assert r.next(w) == t2
    r.finish(w, t2)                                     # freed here (as the driver): kept
    assert r.cached() == before
    t3, _ = r.submit(copy=True)                         # and taken by the next spec
    assert r.cached() == (before[0] - 192, before[1] - 1) and t3 != 0
    # Full tables: refused whole, nothing allocated.
    full = CRegion(max_tasks=1)
    assert full.submit(copy=True)[0] != 0
    used = full.stats()["arena_used"]
    assert full.submit(copy=True) == (0, [])
    assert full.stats()["arena_used"] == used and full.verify()[0] == 0
    assert r.verify()[0] == 0 and r.check() == 0


def test_a_small_object_keeps_only_the_size_class_it_needs():
    # A freed spec's 512-byte block (40 returns), reused for a value of a
    # few bytes, is cut to 192 as it becomes an object's; the rest (320,
    # not a size a cache keeps) goes back to the free lists.
    r = CRegion()
    r.set_slot(r.proc(KIND_DRIVER))
    w = r.proc()
    t, _ = r.submit(copy=True, nret=40)
    assert r.next(w) == t
    r.finish(w, t)                                      # its spec kept here
    assert r.cached() == (512, 1)
    used = r.stats()["arena_used"]
    o = r.put(small=True)                               # 16 bytes: takes that block
    assert r.usable(r.object_data(o)) == 192 - 64
    assert r.cached() == (0, 0)
    assert r.stats()["arena_used"] == used + 192        # only 192 of it held
    o2 = r.put(small=True)                              # its own class, refilled
    assert r.usable(r.object_data(o2)) == 192 - 64 and r.cached() == (192, 1)
    assert r.verify()[0] == 0 and r.check() == 0


def test_an_object_sealed_with_no_payload_touches_no_block():
    # Sealing with no payload (data 0: the store could not hold even the
    # error) must not read a block header below the arena's first byte.
    import os
    r = CRegion()
    r.set_slot(r.proc(KIND_DRIVER))
    before = r.stats()
    pid = os.fork()
    if pid == 0:                                        # a wild access kills only the child
        os._exit(0 if r.seal_empty(r.create()) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    oid = r.create()
    assert r.seal_empty(oid) == 0 and r.state(oid) == OBJ_ERROR
    assert r.object_data(oid) == 0
    after = r.stats()
    assert after["arena_nallocs"] == before["arena_nallocs"] and r.cached() == (0, 0)
    assert r.verify()[0] == 0 and r.check() == 0


def test_a_freed_small_block_stays_in_the_freeing_process_cache():
    # A result freed by the driver becomes its next spec's block, and a
    # spec freed by the worker its next result's, without the lock.
    r = CRegion()
    r.set_slot(r.proc(KIND_DRIVER))    # the process acting: a live one
    o = r.put(small=True)              # refills its class's two entries, takes one
    data = r.object_data(o)
    assert r.cached() == (192, 1)
    used = r.stats()["arena_used"]
    r.decref(o)                        # the emptied entry keeps its block
    assert r.cached() == (384, 2)
    assert r.stats()["arena_used"] == used - 192        # free to the user all the same
    assert r.verify()[0] == 0 and r.check() == 0
    o2 = r.put(small=True)
    assert r.object_data(o2) == data   # taken back from the cache
    o3 = r.put(small=True)
    assert r.cached() == (0, 0)
    o4 = r.put()                       # a block of the same size, not from the cache
    r.decref(o2)
    r.decref(o3)
    assert r.cached() == (384, 2)
    r.decref(o4)                       # both entries full: to the free lists
    assert r.cached() == (384, 2)
    assert r.stats()["arena_used"] == used - 192
    assert r.verify()[0] == 0 and r.check() == 0


def test_idle_workers_are_counted_through_every_state_change():
    r = CRegion()
    w1, w2 = r.proc(), r.proc()
    assert r.stats()["nidle"] == 2
    t1, _ = r.submit()
    t2, _ = r.submit()
    assert r.next(w1) == t1 and r.stats()["nidle"] == 1
    assert r.next(w2) == t2 and r.stats()["nidle"] == 0
    r.block(w1)
    assert r.stats()["nidle"] == 0                   # blocked is not idle
    r.unblock(w1)
    r.finish(w1, t1)
    assert r.stats()["nidle"] == 1
    r.reap(w2)
    assert r.stats()["nidle"] == 1                   # w2 was running: not idle
    r.reap(w1)
    assert r.stats()["nidle"] == 0


def test_return_ids_come_from_submit_not_from_the_spec():
    # The spec may be freed (and its block reused) as soon as submit unlocks.
    r = CRegion()
    w = r.proc()
    t, rets = r.submit(nret=3)
    assert r.next(w) == t
    for ret in rets:
        r.seal(ret)
    r.finish(w, t)                                   # spec freed here
    junk = r.alloc(64)
    r.fill(junk, 64, 0xAB)                           # and its block reused
    assert [r.state(x) for x in rets] == [OBJ_READY] * 3


def test_failed_submits_take_no_task_slot():
    r = CRegion(max_objects=4, max_tasks=8)
    held = [r.put() for _ in range(4)]               # object table full
    for _ in range(20):
        assert r.submit()[0] == 0
    for oid in held:
        r.decref(oid)
    assert all(r.submit()[0] for _ in range(4))      # slots and objects all usable


def test_a_free_top_block_grows_in_place():
    r = CRegion(arena_bytes=64 << 20)
    a = r.alloc(36 << 20)
    r.free(a)
    assert r.alloc(40 << 20) == a                    # not "full": the top block grows
    assert r.check() == 0


def test_freeing_a_long_chain_of_nested_refs_does_not_recurse():
    n = 300_000
    r = CRegion(arena_bytes=256 << 20, max_objects=n + 8)
    prev = r.put()
    for _ in range(n):
        nxt = r.put(contained=[prev])
        r.decref(prev)
        prev = nxt
    assert r.stats()["nobjects"] == n + 1
    r.decref(prev)                                   # frees the whole chain
    assert r.stats()["nobjects"] == 0 and r.stats()["arena_nallocs"] == 0


def test_try_incref_never_revives_a_dead_object():
    r = CRegion()
    oid = r.put()
    assert r.try_incref(oid) == 1
    r.decref(oid)
    r.decref(oid)
    assert r.try_incref(oid) == 0                    # freed: no count taken
    pending = r.create()
    assert r.try_incref(pending) == 0                # not sealed yet


def test_stuck_means_every_worker_blocked_at_the_limit_with_work_queued():
    r = CRegion()                                    # max_workers 8, but procs here are
    w = r.proc()                                     # not counted as started workers
    t, _ = r.submit()
    assert r.next(w) == t
    r.block(w)
    assert r.stuck() == 0                            # below the limit: another may start
    r.unblock(w)
    r.finish(w, t)


def test_generations_run_past_32_bits_without_aliasing():
    r = CRegion()
    a = r.put()
    r.decref(a)                                   # entry free again
    r.set_free_generation((1 << 32) - 1)
    b = r.put()                                   # same entry, generation 2^32 - 1
    r.decref(b)
    c = r.put()                                   # generation 2^32: past 32 bits
    assert len({a, b, c}) == 3
    assert r.state(b) == -1 and r.state(a) == -1  # stale ids stay stale
    assert r.state(c) == OBJ_READY
    r.decref(c)


def test_pool_workers_are_keyed_by_the_runtime_env_of_their_first_task():
    r = CRegion()
    w1, w2 = r.proc(), r.proc()
    ta, _ = r.submit(env=7)
    assert r.next(w1) == ta                          # a fresh worker takes any task...
    assert r.proc_env(w1) == (1 << 63) | 7           # ...and is keyed by it
    r.finish(w1, ta)
    tp, _ = r.submit()
    assert r.next(w1) == 0                           # keyed to env 7: no plain task
    assert r.next(w2) == tp and r.proc_env(w2) == 1 << 63    # keyed to none
    r.finish(w2, tp)
    tb, _ = r.submit(env=9)
    assert r.next(w1) == 0 and r.next(w2) == 0       # neither runs env 9...
    assert r.verify()[0] == 0
    (w3,) = r.spawn_take()                           # ...so the kick asked for a fresh one
    r.started(w3)
    assert r.spawn_take() == []                      # once
    assert r.next(w3) == tb
    ta2, _ = r.submit(env=7)
    assert r.next(w3) == 0 and r.next(w2) == 0 and r.next(w1) == ta2
    assert r.stats()["cpus_avail"] == 0
    assert r.verify()[0] == 0
    r.finish(w3, tb)
    assert r.reap(w1) == ta2                         # a keyed worker's death is counted
    assert r.verify()[0] == 0
    assert r.retry(t=ta2) == 0                       # no retries: given up
    r.reap(w2)
    r.reap(w3)
    assert r.verify()[0] == 0


def test_a_runtime_env_task_waits_for_cpus_like_any_other_and_then_for_no_plain_backlog():
    r = CRegion(cpus_milli=1000)
    w1, w2 = r.proc(), r.proc()
    tp, _ = r.submit()
    assert r.next(w1) == tp                          # the only CPU
    te, _ = r.submit(env=5)
    tp2, _ = r.submit()
    assert r.next(w2) == 0                           # nothing fits
    assert r.spawn_take() == []                      # no CPU free: nothing to start for
    r.finish(w1, tp)
    # te fits now and no worker has its runtime_env: the plain w1 leaves it
    # the CPU (else plain work would take it again and again).
    assert r.next(w1) == 0
    assert r.next(w2) == te                          # the fresh w2 takes te
    assert r.next(w1) == 0                           # no CPU free
    r.finish(w2, te)
    assert r.next(w1) == tp2                         # then plain work goes on
    r.finish(w1, tp2)
    assert r.verify()[0] == 0
    r.reap(w1)
    r.reap(w2)


def _plain_worker(r):
    """A pool worker keyed to no runtime_env (its first task had none)."""
    w = r.proc()
    t, _ = r.submit()
    assert r.next(w) == t
    r.finish(w, t)
    return w


def _fresh_worker_runs(r, t):
    """A fresh pool worker that took and ran task t."""
    w = r.proc()
    assert r.next(w) == t
    r.finish(w, t)
    return w


def _verified_and_reaped(r, *workers):
    assert r.verify()[0] == 0
    for w in workers:
        r.reap(w)


def test_a_plain_worker_leaves_an_env_task_a_cpu_for_a_quarter_second_at_most():
    import time
    r = CRegion(cpus_milli=1000)
    w1 = _plain_worker(r)
    tp, _ = r.submit()
    assert r.next(w1) == tp
    te, _ = r.submit(env=5)
    tp2, _ = r.submit()
    r.finish(w1, tp)
    assert r.next(w1) == 0                           # te fits, a fresh worker may come
    time.sleep(0.3)                                  # none came (a fork that stalls)
    assert r.next(w1) == tp2                         # plain work goes on
    r.finish(w1, tp2)
    _verified_and_reaped(r, w1, _fresh_worker_runs(r, te))


def test_a_cancelled_env_task_leaves_the_next_one_its_own_hold():
    import time
    r = CRegion(cpus_milli=1000)
    w1 = _plain_worker(r)
    for env, cancel in ((5, True), (6, False)):
        tp, _ = r.submit()
        assert r.next(w1) == tp
        te, rets = r.submit(env=env)
        tp2, _ = r.submit()
        r.finish(w1, tp)
        assert r.next(w1) == 0                       # held for te: its clock starts
        if not cancel:
            break
        t, gen = r.task_of(rets[0])
        r.cancel(t, gen)
        assert r.drop(t, gen)                        # te never starts
        assert r.next(w1) == tp2
        r.finish(w1, tp2)
        time.sleep(0.3)                              # past te's 250 ms
    w2 = _fresh_worker_runs(r, te)
    assert r.next(w1) == tp2
    r.finish(w1, tp2)
    _verified_and_reaped(r, w1, w2)


def test_a_runtime_env_task_whose_worker_is_busy_holds_back_no_plain_work():
    r = CRegion(cpus_milli=2000)
    w1 = _plain_worker(r)
    w2 = r.proc()
    te, _ = r.submit(env=5)
    assert r.next(w2) == te                          # w2: keyed to 5, running
    te2, _ = r.submit(env=5)
    tp, _ = r.submit()
    assert r.next(w1) == tp                          # te2 waits for w2, not for the CPU
    r.finish(w2, te)
    assert r.next(w2) == te2
    r.finish(w2, te2)
    r.finish(w1, tp)
    assert r.verify()[0] == 0
    r.reap(w1)
    r.reap(w2)


def test_nested_xq_tasks_go_first_but_top_level_ones_get_a_turn():
    r = CRegion()
    r.define_resource(3, "disk", 1000)               # one unit: one task at a time
    disk = [0, 0, 0, 1000, 0, 0, 0, 0]
    assert r.proc(KIND_DRIVER) == 0                  # this process: the driver
    w, inner = r.proc(), r.proc()
    top, _ = r.submit(res=disk)                      # from the driver: top-level
    r.use_ledger(inner)                              # from inside a task: nested
    nested = [r.submit(res=disk)[0] for _ in range(40)]
    r.use_ledger(None)
    order = []
    while len(order) < 41:
        t = r.next(w)
        order.append(t)
        r.finish(w, t)
        assert r.verify()[0] == 0
    assert order[0] == nested[0]                     # children before queued parents...
    assert order.index(top) == 32                    # ...but 32 in a row at most
    assert sorted(order) == sorted(nested + [top])
    r.reap(w)
    r.reap(inner)
