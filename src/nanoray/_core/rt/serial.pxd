# Values to payloads and back (rt/serial.pyx).

cdef class _Pickled:
    cdef bytes data                   # the pickle stream (buffers out of band)
    cdef list bufs                    # memoryviews, each C-contiguous bytes
    cdef list contained               # ObjectRefs met while pickling
    cdef uint64_t size                # payload bytes
