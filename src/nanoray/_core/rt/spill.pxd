# Spilling sealed payloads to files and back (rt/spill.pyx).

cdef bint _spill_one(Region reg, uint64_t need) except -1
cdef bint _restore(Region reg, uint64_t oid, uint64_t file, uint64_t size) except -1
cdef bint _spill_file_is(Region reg, uint64_t oid, uint64_t file)
cdef uint64_t _pin_payload(Region reg, uint64_t oid, int *state) except? 0
