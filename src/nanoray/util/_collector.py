"""The background thread of the stdlib drop-ins (Pool, RayExecutor): it
waits for the refs its owner has in flight and hands each finished one to
owner._deliver(ref).  It holds the owner only while it works (owner_ref is
a weak reference), so an owner nobody holds is collected, as the stdlib's
pools and executors are.

The owner provides, called with `cond` held for _in_flight:
  _in_flight()       the refs to wait for; None when the thread should end
  _deliver(ref)      a finished ref to its result
  _runtime_gone(e)   nanoray stopped (e raised by wait); True to end the thread
"""

import nanoray


def collect(owner_ref, cond):
    while True:
        owner = owner_ref()
        if owner is None:
            return
        with cond:
            refs = owner._in_flight()
            if refs is None:
                return
            if not refs:
                owner = refs = None
                cond.wait(0.1)
                continue
        owner = None
        try:
            ready, pending = nanoray.wait(refs, num_returns=1, timeout=0.05)
        except Exception as e:               # the runtime went away
            owner = owner_ref()
            if owner is None or owner._runtime_gone(e):
                return
            owner = None
            continue
        owner = owner_ref()
        if owner is None:
            return
        for ref in ready:
            owner._deliver(ref)
        # Hold no ref while idle: a result the owner has handed out (or
        # one it dropped) must leave the store when its user drops it,
        # not when this thread next wakes.
        owner = refs = ready = pending = ref = None
