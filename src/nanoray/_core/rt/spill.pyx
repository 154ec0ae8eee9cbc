# Spilling: when an allocation finds the store full, sealed objects that
# nothing has mapped are written to files and their blocks freed; a reader
# of a spilled object reads it back into the store (csrc/nr_spill.c keeps
# the state, this file does the I/O).
# Included by _runtime.pyx: one extension module, one concern per file.


cdef str _spill_path(Region reg, uint64_t oid):
    cdef char buf[320]
    if nr_spill_path(&reg.r, oid, buf, sizeof(buf)) != 0:
        return None
    return buf.decode()


cdef bint _spill_one(Region reg, uint64_t need) except -1:
    """Writes out the object whose block frees the most useful span; False
    when no object can be spilled."""
    cdef uint64_t data = 0, size = 0
    cdef uint64_t oid
    with nogil:
        oid = nr_spill_pick(&reg.r, need, &data, &size)
    if oid == 0:
        return False
    path = _spill_path(reg, oid)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = PyMemoryView_FromMemory(reg.r.base + data, size, PyBUF_READ)
            done = 0
            while done < size:
                done += os.write(fd, view[done:])
        finally:
            os.close(fd)
    except BaseException:
        nr_spill_abort(&reg.r, oid)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    if not nr_spill_commit(&reg.r, oid):       # a reader pinned it meanwhile
        try:
            os.unlink(path)
        except OSError:
            pass
    return True


cdef bint _restore(Region reg, uint64_t oid, uint64_t size) except -1:
    """Reads a spilled object back into the store.  False when it was not
    there to read (restored, or freed, by another process meanwhile)."""
    path = _spill_path(reg, oid)
    cdef uint64_t off = _alloc(reg, size)
    cdef bint ok = False
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            view = PyMemoryView_FromMemory(reg.r.base + off, size, PyBUF_WRITE)
            done = 0
            while done < size:
                n = os.readv(fd, [view[done:]])
                if n == 0:
                    return False                # cut short: being rewritten
                done += n
        finally:
            os.close(fd)
        ok = nr_spill_restore(&reg.r, oid, off)
    finally:
        if not ok:
            nr_arena_free(&reg.r, off)
    try:
        os.unlink(path)
    except OSError:
        pass
    return True


cdef uint64_t _pin_payload(Region reg, uint64_t oid, int *state) except? 0:
    """Pins an object's payload in memory (restoring it if spilled) and
    returns its offset; 0 when it has none.  The caller unpins it."""
    cdef uint64_t data = 0, size = 0
    cdef uint32_t spill = 0
    cdef int st
    while True:
        st = nr_object_pin(&reg.r, oid, &data, &size, &spill)
        state[0] = st
        if st < 0 or data or spill == NR_SPILL_NONE:
            return data
        if spill == NR_SPILL_WRITING:           # being written out: wait for it
            time.sleep(0.0002)
        else:
            _restore(reg, oid, size)


def spill_dir(Region reg):
    """Where this runtime's spilled objects go (None if not set)."""
    d = reg.r.hdr.spill_dir.decode()
    return d or None


def set_spill_dir(Region reg, str path):
    if nr_spill_set_dir(&reg.r, os.fsencode(path)) != 0:
        raise ValueError("object_spilling_directory is too long: %r" % path)
