# get, wait, futures (rt/waiting.pyx).

cdef class _Watcher:
    cdef Region reg                   # the runtime whose refs it watches
    cdef uint32_t cancel              # set to make the thread re-read `pending`
    cdef int pid                      # the process that started its thread
    cdef object cond                  # guards pending
    cdef dict pending                 # object id -> [ref, callback, ...]
    cdef object thread                # the watcher thread, once started
    cdef unsigned long task_seq       # the task that last registered a ref (workers)
