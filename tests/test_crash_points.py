"""Crash consistency of the C layer, walked point by point.

The test module's copy of the core is built with crash points
(NR_CRASHPOINTS, csrc/nr_undo.h): every logged store in a critical section
is one.  A scenario that passes through every critical section runs in a
forked child, which SIGKILLs itself at the n-th point, for every n.  The
parent then takes the lock (which undoes the dead child's section) and
checks that:
  - the structures mean exactly what they meant when the child last took
    the lock or committed (a digest of them, nr_region_digest);
  - every table, queue, list and counter agrees with the others
    (nr_region_verify);
  - the region still works: objects, a task and the arena, after which
    everything verifies again.
"""

import os
import re
import signal
import threading
import time
import traceback
from pathlib import Path

import pytest

from nanoray._core._ctest import CrashPoints, CRegion

SPEC_TASK, SPEC_CREATE, SPEC_CALL = 0, 1, 2
KIND_DRIVER, KIND_WORKER, KIND_ACTOR = 1, 2, 3
DETACHED, UNORDERED = 32, 64
CSRC = Path(__file__).resolve().parent.parent / "csrc"


def scenario(r):
    """Every critical section of the C layer, in a fixed order, acting as
    several processes (one keeps a ledger and blocks in flight, and is
    reaped by this one; one sleeps for work in a thread)."""
    assert r.proc(KIND_DRIVER) == 0              # this process
    r.spill_dir("/nonexistent-nanoray-walk")     # state only: no file is written
    r.define_resource(1, "GPU", 2000)             # two devices
    r.define_resource(3, "disk", 1000)
    # Objects: put, nested refs, create/seal, errors, try_incref, decref.
    a = r.put()
    b = r.put([a])
    c = r.create()
    r.seal(c, [b])
    r.decref(a)
    r.decref(b)
    assert r.try_incref(c)
    r.decref(c)
    err = r.create()
    r.seal(err, error=True)
    assert r.seal(err) == 1                       # sealed twice: refused
    unseen = r.create()
    r.seal(unseen, error=True)
    assert r.release(unseen, True)                # the last drop of an unseen failure: back,
    assert not r.release(unseen, True)            # reported, then dropped again (freed)
    dropped = r.create()
    r.decref(dropped)                             # freed when sealed
    r.seal(dropped)
    p1, p2 = r.put(), r.put()
    r.release(p1)                                 # frees put off (ObjectRef drops)...
    r.release(p2)
    r.free(r.alloc(5000))                         # ...done first in the next section

    # Arrays born in the arena: a block referred to by objects, given back
    # by the array and by the objects in either order; headers cut where
    # old bytes were (garbage left in the `born` word).
    g = r.alloc(40000)
    guard = r.alloc(100)                          # so that g's block is not the top one
    r.fill(g, 40000, 0xFF)
    r.free(g)
    b1 = r.born_alloc(5000)                       # cut out of the garbage
    o1 = r.born_put([b1, 0])
    r.born_release(b1)                            # the array first: the object keeps it
    r.decref(o1)                                  # freed with the object
    b2 = r.born_alloc(9000)
    o2 = r.create()
    assert r.born_seal(o2, [b2, b2]) == 0         # two buffers of one block
    r.decref(o2)                                  # the object first: the array keeps it
    r.born_release(b2)
    x = r.alloc(4000)
    r.fill(x, 4000, 0xFF)
    r.free(x)
    r.free(r.alloc(1000))                         # a header cut out of the garbage...
    r.free(r.alloc(1000))                         # ...and allocated
    r.free(guard)
    h = r.alloc(30000)
    guard = r.alloc(100)
    r.fill(h, 30000, 0xFF)
    r.free(h)
    s = r.alloc(1000)                             # the rest: a free block headed in garbage,
    b3 = r.born_alloc(5000)                       # taken by an aligned first fit
    r.born_release(b3)
    r.free(s)
    r.free(guard)
    assert r.born_count() == 0

    # A second process with counts in its own ledger and two blocks in
    # flight, reaped below.
    other = r.proc()
    r.use_ledger(other)
    held = r.put()
    r.incref(c)
    assert r.try_incref(c)
    r.alloc(100)
    r.free(r.alloc(100))
    r.alloc(300)
    r.alloc_small(64)                             # its cache filled, one block taken
    r.free(r.alloc_small(64))                     # a cached block given back
    r.seal(r.create(), small=True)                # and one made an object's
    unsealed = r.create()                         # it dies before sealing this
    r.born_alloc(3000)                            # its arrays: given back when reaped,
    kept = r.born_put([r.born_alloc(3000)])       # one of them referred to by an object
    writing_out = r.put()
    assert r.spill_pick(0)[0]                     # it dies writing one out
    r.use_ledger(None)
    r.incref(unsealed)
    r.incref(kept)

    # Tasks: waiting on an argument, ready, running, finished, retried.
    w = r.proc()
    dep = r.create()
    t1, (r1,) = r.submit(deps=[dep, c], holds=c, retries=1)
    t2, (r2,) = r.submit(deps=[c])
    assert r.next(w) == t2
    r.block(w)
    r.may_progress(w, 1)
    r.may_progress(w, 0)
    r.unblock(w)
    r.seal(r2)
    r.finish(w, t2)
    r.seal(dep)                                   # t1 is ready now
    assert r.next(w) == t1
    r.reap(w)                                     # its worker dies running it
    assert r.retry(t1) == 1
    w2 = r.proc()
    assert r.next(w2) == t1
    r.seal(r1, [c])
    r.finish(w2, t1)
    routed, (rr,) = r.submit(target=w2 + 1)       # to w2's own queue
    assert r.next(w2) == routed
    queued, (rq,) = r.submit(target=w2 + 1)       # pipelined behind it
    assert r.seal_finish_then_next(w2, routed, rr)[0] == queued   # one section
    r.seal(rq)                                    # (sealed first, as by a retry)
    assert r.seal_finish_then_next(w2, queued, rq)[0] == 0        # refused: block back
    copied, (rc,) = r.submit(target=w2 + 1, copy=True)   # its block taken in its section
    assert r.next(w2) == copied
    r.seal(rc)
    r.finish(w2, copied)
    assert r.next_blocking(w2, 1_000_000) == -1   # sleeps, times out, retires
    r.reap(w2)

    # A streaming generator task: it yields once (its first cell sealed, the
    # next one recorded), dies; the pending cell outlives its creator, and
    # the re-run resumes there.
    ws = r.proc()
    ts, (cell0,) = r.submit(retries=1)
    assert r.next(ws) == ts
    r.use_ledger(ws)
    cell1 = r.create()
    assert r.stream_seal(ts, cell0, cell1) == 0
    r.incref(cell1)                               # the caller's count, as its reader
    r.use_ledger(None)
    assert r.stream_state(ts) == (cell1, 1)
    assert r.reap(ws) == ts
    assert r.state(cell1) == 1                    # still pending: left for the re-run
    assert r.retry(ts) == 1
    ws2 = r.proc()
    assert r.next(ws2) == ts
    cell2 = r.create()
    assert r.stream_seal(ts, cell1, cell2) == 0
    r.seal(cell2)                                 # the end of the stream
    r.finish(ws2, ts)
    for x in (cell0, cell1, cell2):
        r.decref(x)
    r.reap(ws2)
    r.reap(other)                                 # gives back its ledger and blocks
    assert r.state(unsealed) == 3                 # sealed as an error for it
    r.decref(unsealed)
    assert r.born_count() == 1                    # `kept`'s block: this one's count
    r.decref(kept)
    assert r.born_count() == 0

    # Spilling: written out, pinned meanwhile (kept), restored, freed spilled.
    s1 = r.put()
    s2 = r.put()
    oid, data, file = r.spill_pick(1 << 30)
    assert r.spill_commit(oid) == 1
    assert r.pin(oid)[1:] == (0, 2)               # in a file: no pin taken
    assert r.spill_file(oid) == file
    block = r.payload()                           # what the file held: an empty payload
    assert r.spill_restore(oid, file + 1, block) == 0   # not its file
    assert r.spill_restore(oid, file, block) == 1
    assert r.pin(oid)[2] == 0
    r.unpin(oid)
    oid2, _, _ = r.spill_pick(1 << 30)
    r.raw_pin(oid2, 1)                            # a racing reader's pin lands first
    assert r.spill_commit(oid2) == 0              # so the block stays
    r.raw_pin(oid2, -1)
    oid3, _, _ = r.spill_pick(1 << 30)
    r.spill_abort(oid3)
    oid4, _, _ = r.spill_pick(1 << 30)
    assert r.spill_commit(oid4) == 1
    r.decref(s1)
    r.decref(s2)                                  # one of them freed while spilled
    for x in (dep, r1, r2, err, c, rr):           # `held` went with `other`
        r.decref(x)
    # An object whose buffer lives in a born block is spilled made whole:
    # the object gives its count on the block back (freeing it).
    bb = r.born_alloc(3000)
    sb = r.born_put([bb])
    r.born_release(bb)
    for _ in range(50):
        oid, _, _ = r.spill_pick(0)
        if oid == sb:
            break
        assert r.spill_commit(oid) == 1               # others go first
    assert oid == sb
    assert r.spill_commit_as(sb, 4096) == 1
    assert r.born_count() == 0
    r.decref(sb)

    # A worker asleep in a thread is woken by a submit.
    w3 = r.proc()
    got = []
    th = threading.Thread(target=lambda: got.append(r.next_blocking(w3, 10_000_000_000)))
    th.start()
    while not r.sleeping(w3):
        time.sleep(0.0005)
    t5, (r5,) = r.submit()
    th.join()
    assert got == [t5]
    r.finish(w3, t5)

    # Exception retries and cancelling: a retry taken until none is left; a
    # running task cancelled (no retry after it); a queued one cancelled.
    parent = (7 << 32) | 3
    t6, (r6,) = r.submit(retries=2, parent=parent)
    t6_, g6 = r.task_of(r6)
    assert t6_ == t6 and r.children(parent) == [(g6 << 32) | t6]
    assert r.next(w3) == t6
    assert r.use_retry(t6) == 1
    assert r.use_retry(t6) == 1                    # the last one
    assert r.use_retry(t6) == 0
    assert r.cancel(t6, g6)[0] == 3                # NR_TASK_RUNNING
    assert r.task_cancelled(t6) == 1
    r.seal(r6, error=True)
    r.finish(w3, t6)
    assert r.task_of(r6) == (0, 0) and r.cancel(t6, g6)[0] == -1   # released
    t7, (r7,) = r.submit(retries=2)
    assert r.cancel(t7, r.task_of(r7)[1])[0] == 2  # NR_TASK_READY: it never starts
    assert r.use_retry(t7) == 0
    assert r.next(w3) == t7
    r.seal(r7, error=True)
    r.finish(w3, t7)
    r.decref(r6)
    r.decref(r7)

    # Runtime_envs: a fresh worker keyed by its first task's environment;
    # another environment's task, which no idle worker may run, asks for a
    # fresh one; a keyed worker retires, another dies.
    we = r.proc()
    te, (re1,) = r.submit(env=11)
    assert r.next(we) == te
    r.seal(re1)
    r.finish(we, te)
    te2, (re2,) = r.submit(env=12)
    assert r.next(we) == 0 and r.next(w3) == 0
    (wf,) = r.spawn_take()
    r.started(wf)
    assert r.next(wf) == te2
    r.seal(re2)
    r.finish(wf, te2)
    assert r.next_blocking(we, 1_000_000) == -1   # idle, keyed: retires
    r.reap(we)
    r.decref(re1)
    r.decref(re2)
    # A task that cannot have a worker yet holds up no other environment's:
    # the kick wakes a sleeper that has work of its own behind it.
    wk = r.proc()
    tk, (rk,) = r.submit(env=21)
    assert r.next(wk) == tk
    r.seal(rk)
    r.finish(wk, tk)
    r.decref(rk)
    got = []
    th = threading.Thread(target=lambda: got.append(r.next_blocking(wk, 10_000_000_000)))
    th.start()
    while not r.sleeping(wk):
        time.sleep(0.0005)
    ta, (ra,) = r.submit(env=22)                  # no worker may run it: one is asked for
    tb, (rb,) = r.submit(env=21)                  # behind it, for the sleeper
    th.join()
    assert got == [tb]
    r.seal(rb)
    r.finish(wk, tb)
    (wn2,) = r.spawn_take()
    r.started(wn2)
    assert r.next(wn2) == ta
    r.seal(ra)
    r.finish(wn2, ta)
    for x in (ra, rb):
        r.decref(x)
    r.reap(wk)
    r.reap(wn2)

    # At max_workers, room for a fresh worker is made by an idle worker of
    # another environment, which retires at once.
    extra = []
    while r.stats()["nworkers"] < 8:
        x = r.proc()
        tx, (rx,) = r.submit()
        assert r.next(x) == tx                    # keyed to none
        r.seal(rx)
        r.finish(x, tx)
        r.decref(rx)
        extra.append(x)
    te3, (re3,) = r.submit(env=13)                # no worker may run it, none can start
    assert r.spawn_take() == []
    assert r.next_blocking(extra[0], 10_000_000_000) == -1   # evicted: at once
    r.reap(extra[0])
    (wn,) = r.spawn_take()
    r.started(wn)
    assert r.next(wn) == te3
    r.seal(re3)
    r.finish(wn, te3)
    r.decref(re3)
    for x in extra[1:] + [wn, wf]:
        r.reap(x)

    # Spawning: requests taken, one given back (a failed fork), one reaped
    # before it started.
    t3, (r3,) = r.submit()
    t4, (r4,) = r.submit()
    r.block(w3)                                   # so no worker is idle
    slots = r.spawn_take()
    assert len(slots) == 2, slots
    r.spawn_giveback(slots[0])
    r.reap(slots[1])

    # Resources beyond CPUs: tasks wait in the xq and the first that fits
    # runs (an infeasible one holds up nothing); devices are given back when
    # the task finishes or its worker dies.
    g1, (rg1,) = r.submit(res=[0, 1000, 0, 0, 0, 0, 0, 0])
    never, (rnever,) = r.submit(res=[0, 0, 0, 5000, 0, 0, 0, 0])   # more disk than exists
    g2, (rg2,) = r.submit(res=[0, 2000, 0, 0, 0, 0, 0, 0], cpus=0)
    half, (rhalf,) = r.submit(res=[0, 500, 0, 1000, 0, 0, 0, 0], cpus=0)
    w6, w7 = r.proc(), r.proc()
    assert r.next(w6) == g1 and r.task_gpus(g1) in (1, 2)
    assert r.next(w7) == half                     # g2 needs both devices: it waits
    r.seal(rhalf)
    r.finish(w7, half)
    r.seal(rg1)
    r.finish(w6, g1)
    assert r.next(w7) == g2 and r.task_gpus(g2) == 3
    assert r.next(w6) == t3                       # the xq has nothing that fits: a CPU task
    r.seal(r3)
    r.finish(w6, t3)
    r.reap(w7)                                    # dies holding both devices
    assert r.retry(g2) == 0                       # no retries: the caller fails it
    r.seal(rg2, error=True)
    r.task_release(g2)
    assert r.resources()[1][1] == 2000
    tn, gn = r.task_of(rnever)
    assert r.drop(tn, gn) == 0                     # not cancelled: stays
    assert r.cancel(tn, gn)[0] == 2
    r.seal(rnever, error=True)
    assert r.drop(tn, gn) == 1                     # cancelled in the xq: released
    r.decref(rnever)
    hg = r.put()
    sg, gg = r.actor_create(hg, 0, 0, None, 0, [0, 500, 0, 0, 0, 0, 0, 0])
    assert r.resources()[1][1] == 1500
    r.actor_die(sg, gg, 0)
    r.decref(hg)
    # An infeasible actor (flag 128) holds nothing and no process starts for
    # it until it is killed or orphaned; then one starts, to exit at once.
    hi = r.put()
    si, gi = r.actor_create(hi, 1, 64000, None, 128, [0, 9000, 0, 0, 0, 0, 0, 0])
    assert r.resources()[1][1] == 2000 and si not in r.spawn_take()
    assert r.actor_kill(si, gi, 0) == 0           # a restart left: taken, still pending
    assert si not in r.spawn_take()
    r.actor_kill(si, gi, 0)                       # none left: it ends
    assert si in r.spawn_take()
    r.actor_reap(si, 0)
    r.decref(hi)
    hj = r.put()
    sj, gj = r.actor_create(hj, 0, 64000, None, 128)
    r.decref(hj)                                  # orphaned before it ever started
    assert sj in r.spawn_take()
    r.actor_reap(sj, 0)
    for x in (rg1, rg2, rhalf):
        r.decref(x)

    # Placement groups: one placed at once and one that never fits (pending);
    # tasks and an actor charged to a group, a task lending its CPUs back to
    # it while blocked; a group removed while its task runs (that task then
    # gives back to the node), and a pending one removed.
    gone = r.put()
    r.pg_gone_error(gone)                         # what a removed group's tasks fail with
    r.decref(gone)
    pg1 = r.pg_create(1000, [0, 1000, 0, 0, 0, 0, 0, 0])
    assert r.pg_state(pg1) == 2                   # NR_PG_CREATED
    assert r.pg_fits(pg1, 1000) == 1 and r.pg_fits(pg1, 1001) == 0
    pgx = r.pg_create(100000)
    assert r.pg_state(pgx) == 1                   # NR_PG_PENDING
    tp, (rtp,) = r.submit(pool=pg1, res=[0, 500, 0, 0, 0, 0, 0, 0])
    tq, (rtq,) = r.submit(pool=pg1)
    w8 = r.proc()
    assert r.next(w8) == tp                       # charged to pg1: tq waits for its CPU
    assert r.pg_tasks(pg1) == [(r.task_of(rtq)[1] << 32) | tq]
    r.block(w8)
    r.unblock(w8)
    ha = r.put()
    sa, ga = r.actor_create(ha, 0, 500, None, 0, None, pool=pg1)
    r.actor_die(sa, ga, 0)
    r.decref(ha)
    r.seal(rtp)
    r.finish(w8, tp)
    assert r.next(w8) == tq
    assert r.pg_remove(pg1) == 0 and r.pg_remove(pg1) == -1
    r.seal(rtq)
    r.finish(w8, tq)                              # to the node: pg1 is gone
    late, (rlate,) = r.submit(pool=pg1)           # into a removed group: failed at once
    assert r.state(rlate) == 3
    r.decref(rlate)
    assert r.pg_remove(pgx) == 0
    for x in (rtp, rtq):
        r.decref(x)

    # A group of two bundles, a reservation each: a call charged to bundle 0
    # waits while that is full, one for any bundle takes bundle 1; an actor
    # for any bundle that finds no room oversubscribes the first.  A group
    # the node has no room for is pending until all of it fits, then placed
    # whole; any bundle's pool names its group.
    any_bundle = 0x80000000                       # NR_POOL_ANY
    pg2, (_, b1) = r.pg_create([1000, 1000], bundles=True)
    assert r.pg_state(pg2) == 2 and r.pg_state(b1) == 2
    assert r.pg_fits(b1, 1000) == 1 and r.pg_fits(pg2 | any_bundle, 1001) == 0
    pg3 = r.pg_create([500, 500])
    assert r.pg_state(pg3) == 1                   # the node's CPUs are all pg2's
    ta, (ra,) = r.submit(pool=pg2)
    tb, (rb,) = r.submit(pool=pg2)
    tc, (rc,) = r.submit(pool=pg2 | any_bundle)
    w9 = r.proc()
    assert r.next(w8) == ta and r.next(w9) == tc  # tb waits for bundle 0
    hb = r.put()
    sb, gb = r.actor_create(hb, 0, 500, None, 0, None, pool=pg2 | any_bundle)
    r.actor_die(sb, gb, 0)
    r.decref(hb)
    r.seal(ra)
    r.finish(w8, ta)
    assert r.next(w8) == tb
    r.seal(rc)
    r.finish(w9, tc)
    assert r.pg_remove(b1) == 0
    assert r.pg_state(pg3) == 2                   # what pg2 had unused placed it
    r.seal(rb)
    r.finish(w8, tb)
    assert r.pg_remove(pg3) == 0
    for x in (ra, rb, rc):
        r.decref(x)

    # Actors: named, restarted (once while running a call, once inside
    # __init__), calls retried, held behind a pending argument, killed,
    # reaped for good, handles dropped.
    handle = r.put()
    slot, gen = r.actor_create(handle, 2, 0, "walk")
    create, _ = r.submit(target=slot + 1, kind=SPEC_CREATE, nret=0)
    assert slot in r.spawn_take()
    r.spawn_giveback(slot)                        # its fork failed: asked for again
    r.actor_started(slot)
    assert r.actor_lookup("walk")[0] == handle
    assert r.next(slot) == create
    r.finish(slot, create)
    pend = r.create()
    c1, (rc1,) = r.submit(deps=[pend], target=slot + 1, kind=SPEC_CALL, holds=handle, cpus=0,
                          retries=1)
    c2, (rc2,) = r.submit(target=slot + 1, kind=SPEC_CALL, holds=handle, cpus=0, retries=1)
    r.seal(pend)
    assert r.next(slot) == c1
    death = r.put()
    assert r.actor_reap(slot, death) == 1          # restarts: c1 is retried first
    r.actor_started(slot)
    assert r.next(slot) == create
    assert r.actor_reap(slot, death) == 1          # dies in __init__: restarts again
    r.actor_started(slot)
    assert r.next(slot) == create
    r.finish(slot, create)
    assert r.next(slot) == c1
    r.finish(slot, c1)
    assert r.next(slot) == c2
    c3, (rc3,) = r.submit(target=slot + 1, kind=SPEC_CALL, holds=handle, cpus=0)
    r.actor_kill(slot, gen)
    assert r.actor_reap(slot, death) == 0          # killed for good: c2 and c3 fail
    late, (rl,) = r.submit(target=slot + 1, kind=SPEC_CALL, holds=handle, cpus=0)
    r.actor_die(slot, gen, death)

    # A detached actor dies while its creation and a call wait for arguments.
    h3 = r.put()
    s3, g3 = r.actor_create(h3, 0, 0, None, DETACHED)
    parg = r.create()
    cr3, _ = r.submit(deps=[parg], target=s3 + 1, kind=SPEC_CREATE, nret=0)
    r.actor_started(s3)
    parg2 = r.create()
    q3, (rq3,) = r.submit(deps=[parg2], target=s3 + 1, kind=SPEC_CALL, holds=h3, cpus=0)
    r.actor_die(s3, g3, death)
    r.seal(parg)                                  # the cancelled creation is released
    r.seal(parg2)                                 # the held call fails now

    # An unordered actor restarted while running two calls (both retried),
    # then its last handle goes and its process exits.
    h2 = r.put()
    s2, g2 = r.actor_create(h2, 1, 0, None, UNORDERED)
    cr2, _ = r.submit(target=s2 + 1, kind=SPEC_CREATE, nret=0)
    r.actor_started(s2)
    assert r.next(s2) == cr2
    r.finish(s2, cr2)
    me = r.slot()
    r.set_slot(s2)                                # it creates an actor: that one ends with it
    hk = r.put()
    sk, gk = r.actor_create(hk, 1, 0)
    r.set_slot(me)
    q1, (rq1,) = r.submit(target=s2 + 1, kind=SPEC_CALL, holds=h2, cpus=0, retries=1)
    q2, (rq2,) = r.submit(target=s2 + 1, kind=SPEC_CALL, holds=h2, cpus=0, retries=1)
    assert r.next(s2) == q1
    assert r.next(s2) == q2
    assert r.actor_reap(s2, death) == 1
    assert r.actor_reap(sk, death) == 0            # its owner's end: no restart
    r.actor_started(s2)
    assert r.next(s2) == cr2
    r.finish(s2, cr2)
    assert {r.next(s2), r.next(s2)} == {q1, q2}     # unordered: either order
    r.finish(s2, q1)
    r.finish(s2, q2)
    r.decref(h2)
    r.actor_reap(s2, death)
    for x in (handle, h3, hk, death, pend, parg, parg2, rc1, rc2, rc3, rl, rq1, rq2, rq3, r3, r4,
              r5):
        r.decref(x)
    r.shutdown()


def smoke(r):
    """Objects, nested refs, a task and the arena, on whatever the dead
    scenario left behind (a task routed to a new worker's own queue runs
    before anything else queued)."""
    w = r.proc()
    a = r.put()
    b = r.put([a])
    r.decref(a)
    t, (ret,) = r.submit(deps=[b], target=w + 1)
    assert r.next(w) == t
    r.seal(ret, [b])
    r.finish(w, t)
    r.decref(b)
    assert r.state(ret) == 2                      # ready
    r.decref(ret)
    r.free(r.alloc(10000))
    r.reap(w)


def run_child(r, cp, arm):
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            cp.arm(arm)
            scenario(r)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return status


def logged_sites():
    """Every crash point in the C sources: a logged store (W, WINC, WDEC,
    WADD, LADD64, LADD32, LEDGER_ADD, nr_undo_bytes) or the end of a section."""
    sites = set()
    pat = re.compile(r"\b(W|WINC|WDEC|WADD|LADD64|LADD32|LEDGER_ADD|nr_undo_bytes)\(|NR_CRASH_AT_END\(\)")
    for path in sorted(CSRC.glob("*.[ch]")):
        if path.name == "nr_undo.h":              # where they are defined
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pat.search(line.split("/*")[0]):
                sites.add((path.name, i))
    return sites


def new_region():
    return CRegion(arena_bytes=1 << 20, max_objects=64, max_tasks=64, max_deps=64)


def test_the_scenario_runs_clean_and_passes_through_every_crash_point():
    cp = CrashPoints()
    r = new_region()
    assert run_child(r, cp, 0) == 0
    assert r.verify()[0] == 0
    hit = {(os.path.basename(f), line) for f, line in cp.sites()}
    missed = sorted(logged_sites() - hit)
    assert not missed, "crash points the scenario never reaches: %s" % missed


@pytest.mark.parametrize("half", [0, 1])
def test_a_death_at_every_crash_point_is_undone_exactly(half):
    # Every crash point, in two halves (odd and even), each well inside
    # pytest's 300 s stack-dump timeout on a slow machine.
    cp = CrashPoints()
    probe = new_region()
    assert run_child(probe, cp, 0) == 0
    total = cp.count
    assert total > 500
    seen = set()
    for n in range(1 + half, total + 1, 2):
        r = new_region()
        status = run_child(r, cp, n)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (n, status)
        site = cp.died_at
        seen.add(site)
        before = cp.digest
        r.lock()                                  # the repair runs here
        after = r.digest_unlocked()               # (unlocking finishes deferred frees)
        r.unlock()
        assert r.header("repairs") == 1, (n, site)
        assert r.header("broken") == 0, (n, site)
        assert r.header("undo_n") == 0
        assert after == before, "crash point %d at %s:%d was not undone exactly" % (n, *site)
        code, _, _ = r.verify()
        assert code == 0, "crash point %d at %s:%d: invariant %d broken" % (n, *site, code)
        smoke(r)                                  # the region still works
        assert r.verify()[0] == 0, (n, site)
    assert len(seen) > 50


def test_a_death_while_undoing_a_dead_holders_section_is_undone_too():
    """The process repairing a dead holder's section dies at each step of
    the rollback; the next one finishes it, to the same state."""
    cp = CrashPoints()
    probe = new_region()
    assert run_child(probe, cp, 0) == 0
    total = cp.count
    walked = 0
    for n in range(total // 20, total + 1, total // 20):   # twenty first deaths, spread out
        for m in range(1, 10_000):
            r = new_region()
            status = run_child(r, cp, n)
            assert os.WIFSIGNALED(status)
            before = cp.digest
            pid = os.fork()
            if pid == 0:                          # the repairer, dying at its m-th step
                cp.arm(m)
                r.lock()
                os._exit(0)                       # rolled back without dying: holds the lock
            _, status = os.waitpid(pid, 0)
            r.lock()
            after = r.digest_unlocked()
            r.unlock()
            assert after == before, "first death %d, repairer's death %d" % (n, m)
            assert r.verify()[0] == 0
            walked += 1
            if not os.WIFSIGNALED(status):        # the repairer got through: next n
                break
    assert walked > 100                           # deaths inside rollbacks, not just after
