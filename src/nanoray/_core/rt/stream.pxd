# Generator tasks (rt/stream.pyx).

cdef object _GeneratorType            # types.GeneratorType

cdef class _Stream:
    cdef Region reg
    cdef uint32_t t                   # the task yielding
    cdef str name
    cdef uint64_t cell                # the next cell to seal (pending)
    cdef object cell_ref              # this process's count on it (None: a task return)
    cdef uint64_t skip                # values a re-run yields again, not sent
    cdef uint64_t done                # the task's second return: sealed (None) at its end

    cdef void emit(self, object value) except *
    cdef void fail(self, object failure, bint ran=*) except *
    cdef void end(self) except *
    cdef void finished(self, object failure=*) except *
