# The Region handle (rt/handle.pyx).

cdef class Region:
    cdef nr_region_t r                # the C handle: base address, header, fds, slot
    cdef int pid                      # the process whose counts it may change
    cdef readonly uint64_t session    # random per runtime: a ref from another is dead
    cdef object __weakref__
