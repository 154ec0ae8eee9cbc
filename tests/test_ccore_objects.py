"""The C layer on a private region, no processes: frees a process puts off
(nr_object_release's ring in its slot), wait() groups, and reaping."""

import threading
import time

from nanoray._core._ctest import CRegion

OBJ_PENDING, OBJ_READY, OBJ_ERROR = 1, 2, 3
KIND_DRIVER, KIND_WORKER, KIND_ACTOR = 1, 2, 3


def test_a_seal_wakes_only_the_wait_groups_watching_that_object():
    r = CRegion()
    a, b = r.create(), r.create()
    out = []
    t = threading.Thread(target=lambda: out.append(r.wait_many([a, b], 1, 10 * 10**9)))
    t.start()
    deadline = time.monotonic() + 10
    while not (r.waiters_word(a) or 0) >> 16 and time.monotonic() < deadline:
        pass
    groups = r.waiters_word(a) >> 16
    assert bin(groups).count("1") == 1 and r.waiters_word(b) >> 16 == groups
    g = groups.bit_length() - 1
    c = r.create()
    seq = r.wait_seq()
    r.seal(c)                                  # watched by no group: no word moves
    assert r.wait_seq() == seq
    r.seal(a)                                  # its group's word only
    t.join(10)
    assert out == [(1, [True, False])]
    after = r.wait_seq()
    assert after[g] == seq[g] + 1 and [x for i, x in enumerate(after) if i != g] == \
        [x for i, x in enumerate(seq) if i != g]
    r.seal(b)                                  # the mark stays until b is freed
    assert r.wait_seq()[g] == seq[g] + 2
    for x in (a, b, c):
        r.decref(x)
    assert r.create() and r.waiters_word(r.create()) == 0   # a fresh entry: no marks


def test_a_dropped_small_value_is_freed_by_the_next_section_not_its_own():
    # ObjectRef drops (nr_object_release): a small plain value's free waits
    # for the process's next section; anything holding more is freed at once.
    r = CRegion()
    r.set_slot(r.proc(KIND_DRIVER))
    base = r.stats()["nobjects"]
    small = [r.put() for _ in range(3)]
    for o in small:
        r.release(o)
    assert r.releases_put_off() == 3
    assert all(r.state(o) == OBJ_READY for o in small)       # not freed yet
    assert r.verify()[0] == 0                                 # (verify's section frees them)
    assert r.releases_put_off() == 0 and all(r.state(o) == -1 for o in small)
    assert r.stats()["nobjects"] == base

    inner = r.put()
    holder = r.put([inner])                   # holds a ref: freed at once, and inner with it
    r.decref(inner)
    big = r.put(size=4096)                    # beyond a small block
    err = r.create()
    r.seal(err, error=True)
    pending = r.create()                      # its seal frees it
    for o in (holder, big, err, pending):
        r.release(o)
    assert r.releases_put_off() == 0
    assert [r.state(o) for o in (holder, inner, big, err)] == [-1] * 4
    r.seal(pending)
    assert r.state(pending) == -1

    kept = r.put()
    r.incref(kept)
    r.release(kept)                           # not the last count: nothing to put off
    assert r.releases_put_off() == 0 and r.state(kept) == OBJ_READY
    r.release(kept)
    assert r.releases_put_off() == 1
    r.flush_releases()
    assert r.releases_put_off() == 0 and r.state(kept) == -1

    r.set_borrowed(True)                      # the zygote, a forked child: no putting off
    o = r.put()
    r.release(o)
    assert r.releases_put_off() == 0 and r.state(o) == -1
    r.set_borrowed(False)
    assert r.stats()["nobjects"] == base
    assert r.verify()[0] == 0 and r.check() == 0


def test_a_full_ring_of_put_off_frees_is_freed_by_the_next_drop():
    r = CRegion()
    r.set_slot(r.proc(KIND_DRIVER))
    objs = [r.put() for _ in range(65)]
    for o in objs[:64]:
        r.release(o)
    assert r.releases_put_off() == 64
    r.release(objs[64])                       # no room: a section, which frees them all
    assert r.releases_put_off() == 0
    assert all(r.state(o) == -1 for o in objs)
    # An id in the ring whose object was freed meanwhile (by the sweep that
    # follows another process's crash), its entry since reused, frees nothing.
    me, other = r.slot(), r.proc()
    a = r.put()
    r.release(a)
    r.use_ledger(other)                       # another process sweeps
    assert r.sweep() == 1 and r.state(a) == -1
    r.use_ledger(None)
    assert r.releases_put_off(me) == 1
    b = r.create()                            # a's entry, a newer generation: its section
    assert r.object_index(b) == r.object_index(a)        # finds a's id stale first
    assert r.releases_put_off(me) == 0 and r.state(b) == OBJ_PENDING
    r.seal(b)
    assert r.state(b) == OBJ_READY and r.stats()["nobjects"] == 1
    r.decref(b)
    assert r.stats()["nobjects"] == 0
    assert r.verify()[0] == 0 and r.check() == 0


def test_a_reap_frees_what_the_dead_process_put_off_and_a_flush_frees_every_processs():
    r = CRegion()
    r.set_slot(r.proc(KIND_DRIVER))
    w = r.proc()
    r.use_ledger(w)                           # acting as the worker
    objs = [r.put() for _ in range(5)]
    for o in objs:
        r.release(o)
    r.use_ledger(None)                        # the driver again
    assert r.releases_put_off(w) == 5 and all(r.state(o) == OBJ_READY for o in objs)
    r.reap(w)                                 # it died (exit code 0 or not)
    assert r.releases_put_off(w) == 0 and all(r.state(o) == -1 for o in objs)
    w2 = r.proc()                             # another, alive and idle
    r.use_ledger(w2)
    o = r.put()
    r.release(o)
    r.use_ledger(None)
    assert r.releases_put_off(w2) == 1
    assert r.flush_all_releases() == 1 and r.state(o) == -1
    assert r.flush_all_releases() == 0        # nothing left: no section
    assert r.stats()["nobjects"] == 0
    assert r.verify()[0] == 0 and r.check() == 0


def test_reaping_gives_back_every_born_block_in_one_walk_of_the_arena():
    # A dead worker's born blocks, between other processes' blocks, some
    # next to free space (a give-back merges), some held by objects.
    r = CRegion(arena_bytes=64 << 20)
    r.set_slot(r.proc(KIND_DRIVER))
    w = r.proc()
    others, held = [], []
    for i in range(60):
        r.use_ledger(w)
        b = r.born_alloc(5000 + 4096 * (i % 3))
        r.use_ledger(None)
        if i % 5 == 0:
            held.append(r.born_put([b]))         # the driver's object refers to it: kept
        x = r.alloc(200 + i)
        if i % 2:
            r.free(x)                            # free space beside a born block
        else:
            others.append(x)
            r.fill(x, 200, i % 251)
    assert r.born_count() == 60
    r.reap(w)
    assert r.born_count() == len(held)
    for i, x in enumerate(others):
        assert r.read(x, 200) == bytes([(2 * i) % 251]) * 200
    for o in held:
        r.decref(o)
    assert r.born_count() == 0
    for x in others:
        r.free(x)
    assert r.stats()["arena_used"] == 0
    assert r.verify()[0] == 0 and r.check() == 0


def test_an_unseen_failure_is_reported_by_the_seal_or_the_drop_whichever_is_last():
    # "Unhandled error": the process whose drop or seal leaves a failure that
    # nobody saw with no count reports it.  A drop racing the worker's seal
    # is decided in the one section that frees the object.
    r = CRegion()
    r.set_slot(r.proc(KIND_DRIVER))
    dropped_first = r.create()
    assert r.release(dropped_first, True) is False     # pending: nothing to report yet
    assert r.state(dropped_first) == OBJ_PENDING
    assert r.seal(dropped_first, error=True) == 2      # the seal frees it: the worker reports
    assert r.state(dropped_first) == -1

    sealed_first = r.create()
    assert r.seal(sealed_first, error=True) == 0       # a ref holds it
    assert r.release(sealed_first, True) is True       # the drop's count comes back to report
    assert r.state(sealed_first) == OBJ_ERROR and r.waiters_word(sealed_first) & 0x8000
    assert r.release(sealed_first, True) is False      # seen now: the second drop frees it
    assert r.state(sealed_first) == -1

    seen = r.create()
    r.seal(seen, error=True)
    r.mark_seen(seen)                                  # a get raised it somewhere
    assert r.release(seen, True) is False and r.state(seen) == -1
    quiet = r.create()
    r.seal(quiet, error=True)
    assert r.release(quiet, False) is False and r.state(quiet) == -1   # a quiet ref's drop
    fine = r.create()
    assert r.release(fine, True) is False and r.seal(fine) == 0 and r.state(fine) == -1
    assert r.verify()[0] == 0 and r.stats()["nobjects"] == 0
