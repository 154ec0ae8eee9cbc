# Running tasks (rt/worker.pyx).

cdef class _Call:
    cdef uint32_t t                   # the task (index + 1)
    cdef uint32_t kind                # NR_SPEC_*
    cdef uint32_t nret                # return objects
    cdef object func                  # what to call: function, constructor, bound method
    cdef object args, kwargs          # resolved arguments
    cdef object failure               # the error its returns carry, or None
    cdef str name                     # for messages: "f", "Cls.__init__", "Cls.method"
    cdef bint exit_worker             # it raised SystemExit: the process ends
    cdef bint exit_crash              # ...with a code other than 0: an actor's crashes
    cdef object extras                # per-call options (retry_exceptions, gen, env) or None
    cdef object raised                # the exception the call itself raised (for retries)
    cdef bint streamed                # an async generator already sealed its stream
    cdef int64_t t0                   # when it started (nanoray.timeline())
    cdef bint is_map                  # a chunk of f.map(): one call and one return per item
