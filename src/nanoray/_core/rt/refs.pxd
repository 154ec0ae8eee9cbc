# Objects that hold counts in the region (rt/refs.pyx).

cdef class ObjectRef:
    cdef readonly uint64_t _id        # (generation << 32) | (index + 1) in the object table
    cdef Region _reg                  # the runtime it counts in; None for a dead ref
    cdef bint _seen                   # its value was got (or raised), or it was passed on: a
                                      # failure it holds is not reported when it is dropped

cdef class _DepArg:
    cdef public int i                 # index of the top-level ref argument it stands for

cdef class _PinnedBuffer:
    cdef Region reg                   # region of the pinned object
    cdef uint64_t oid                 # object whose count this buffer holds
    cdef char *ptr                    # first byte of the viewed range
    cdef Py_ssize_t size              # bytes viewed
    cdef Py_ssize_t shape[1]          # buffer protocol: one dimension of bytes
    cdef Py_ssize_t strides[1]

cdef class _CowBuffer:
    cdef Region reg                   # region of the object it maps
    cdef uint64_t oid                 # object whose count (and pin) it holds
    cdef char *base                   # its private mapping (MAP_PRIVATE of the memfd)
    cdef size_t length                # bytes mapped
    cdef char *ptr                    # first byte of the viewed range, in the mapping
    cdef Py_ssize_t size              # bytes viewed
    cdef bint readonly                # a shared read-only mapping (not copy-on-write)
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
