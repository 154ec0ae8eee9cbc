# The compiled runtime's interface: one extension module whose concerns live
# in rt/*.pyx, each with its declarations in rt/*.pxd (uvloop's layout).
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t, uintptr_t
from nanoray._core.region cimport *
from nanoray._core.arena cimport *
from nanoray._core.sched cimport *
from nanoray._core.actor cimport *
from nanoray._core.born cimport *

include "rt/handle.pxd"
include "rt/refs.pxd"
include "rt/serial.pxd"
include "rt/waiting.pxd"
include "rt/worker.pxd"
include "rt/stream.pxd"
include "rt/actor.pxd"
include "rt/spill.pxd"
