# Spilling: when an allocation finds the store full, sealed objects that
# nothing has mapped are written to files and their blocks freed; a reader
# of a spilled object reads it back into the store (csrc/nr_spill.c keeps
# the state and removes files no object needs; this file does the I/O).
# Included by _runtime.pyx: one extension module, one concern per file.

# One spill at a time per process (the C layer marks one object per process
# slot); other threads that find the store full wait here, then look again.
# Re-entrant: a signal handler or finalizer that puts while this thread
# spills gets no object to spill (ObjectStoreFullError), not a deadlock.
cdef object _spill_lock = threading.RLock()
cdef int _no_spill_pid = 0        # the zygote never spills (see no_spilling); its
                                  # forked workers do


cdef bytes _spill_path(Region reg, uint64_t file):
    cdef char buf[320]
    if nr_spill_path(&reg.r, file, buf, sizeof(buf)) != 0:
        return None
    return <bytes>buf


cdef void _unlink_quietly(bytes path):
    try:
        os.unlink(path)
    except OSError:
        pass


cdef void _write_all(int fd, view) except *:
    cdef Py_ssize_t done = 0, n = len(view)
    while done < n:
        done += os.write(fd, view[done:])


cdef void _write_region(Region reg, int fd, uint64_t off, uint64_t n) except *:
    """Writes region bytes [off, off + n) through a mapping of their own:
    this process maps them privately (its own array, handed off)."""
    cdef uint64_t start = off & ~(<uint64_t>4095)
    cdef size_t length = <size_t>((off - start + n + 4095) & ~(<uint64_t>4095))
    cdef void *m = mmap(NULL, length, PROT_READ, MAP_SHARED, reg.r.fd, start)
    if m == MAP_FAILED:
        raise OSError("nanoray: could not map an object's pages to spill them")
    try:
        _write_all(fd, PyMemoryView_FromMemory(<char *>m + (off - start), n, PyBUF_READ))
    finally:
        munmap(m, length)


cdef uint64_t _spill_whole(Region reg, uint64_t oid, int fd, char *ptr) except 0:
    """Writes the payload at ptr, whose buffers live in born blocks
    (rt/born.pyx), to fd made whole: the layout _write_payload gives a
    payload that holds its buffers.  Returns the bytes written."""
    import struct
    cdef nr_payload_t *hdr = <nr_payload_t *>ptr
    cdef uint32_t nb = nr_payload_nbufs(hdr), nc = hdr.ncontained, i
    cdef uint64_t *table = nr_payload_contained(hdr) + nc
    cdef uint64_t *blocks = nr_payload_blocks(hdr)
    cdef char *stream = <char *>(table + 3 * nb)
    cdef uint64_t off = 16 + 8 * nc + 16 * nb + hdr.pickle_len, at
    head = bytearray(16 + 8 * nc + 16 * nb)
    struct.pack_into("<IIQ", head, 0, nb, nc, hdr.pickle_len)
    for i in range(nc):
        struct.pack_into("<Q", head, 16 + 8 * i, nr_payload_contained(hdr)[i])
    places = []
    for i in range(nb):
        off = _align(off)
        struct.pack_into("<QQ", head, 16 + 8 * nc + 16 * i, off, table[2 * i + 1])
        places.append(off)
        off += table[2 * i + 1]
    _write_all(fd, head)
    _write_all(fd, PyMemoryView_FromMemory(stream, hdr.pickle_len, PyBUF_READ))
    at = len(head) + hdr.pickle_len
    for i in range(nb):
        if places[i] > at:
            _write_all(fd, bytes(places[i] - at))
        if blocks[i] and nr_born_hidden(table[2 * i], table[2 * i + 1]):
            _write_region(reg, fd, table[2 * i], table[2 * i + 1])
            at = places[i] + table[2 * i + 1]
            continue
        elif blocks[i]:
            view = PyMemoryView_FromMemory(reg.r.base + table[2 * i], table[2 * i + 1], PyBUF_READ)
        else:
            view = PyMemoryView_FromMemory(ptr + table[2 * i], table[2 * i + 1], PyBUF_READ)
        _write_all(fd, view)
        view = None
        at = places[i] + table[2 * i + 1]
    return off


cdef bint _spill_one(Region reg, uint64_t need) except -1:
    """Writes out the object whose block frees the most useful span; False
    when no object can be spilled."""
    if _no_spill_pid == getpid():
        return False
    cdef uint64_t data = 0, size = 0, file = 0
    cdef uint64_t oid
    with _spill_lock:
        with nogil:
            oid = nr_spill_pick(&reg.r, need, &data, &size, &file)
        if oid == 0:
            return False
        path = None
        whole = 0                               # a payload made whole (born buffers)
        try:
            path = _spill_path(reg, file)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if (<nr_payload_t *>(reg.r.base + data)).nbufs & NR_PAYLOAD_EXTERN:
                    whole = _spill_whole(reg, oid, fd, reg.r.base + data)
                else:
                    _write_all(fd, PyMemoryView_FromMemory(reg.r.base + data, size, PyBUF_READ))
            finally:
                os.close(fd)
        except BaseException as e:
            nr_spill_abort(&reg.r, oid)
            if path is not None:
                _unlink_quietly(path)           # its own file: no object names it
            if isinstance(e, OSError):
                raise _exc.ObjectStoreFullError(
                    "nanoray: the object store is full, and spilling an object to %s failed: %s"
                    % (os.fsdecode(path or b"?"), e)) from e
            raise
        if not nr_spill_commit_as(&reg.r, oid, whole):   # a reader pinned it meanwhile
            _unlink_quietly(path)
    return True


cdef bint _restore(Region reg, uint64_t oid, uint64_t file, uint64_t size) except -1:
    """Reads spill file `file` back into the store for the object.  False
    when the object was no longer in that file (restored by another process
    meanwhile, and perhaps spilled again): look again."""
    path = _spill_path(reg, file)
    cdef uint64_t off = _alloc(reg, size)
    cdef bint ok = False
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        if fd < 0:
            if _spill_file_is(reg, oid, file):
                raise _exc.ObjectLostError(
                    "nanoray: object %016x was spilled to %s, and that file is gone"
                    % (oid, os.fsdecode(path)))
            return False                        # restored meanwhile: its file went
        try:
            view = PyMemoryView_FromMemory(reg.r.base + off, size, PyBUF_WRITE)
            done = 0
            while done < size:
                n = os.readv(fd, [view[done:]])
                if n == 0:
                    raise _exc.ObjectLostError(
                        "nanoray: object %016x was spilled to %s, which is cut short (%d of %d "
                        "bytes)" % (oid, os.fsdecode(path), done, size))
                done += n
        finally:
            os.close(fd)
        ok = nr_spill_restore(&reg.r, oid, file, off)
    finally:
        if not ok:
            nr_arena_free(&reg.r, off)
    return ok


cdef bint _spill_file_is(Region reg, uint64_t oid, uint64_t file):
    cdef uint64_t data = 0, size = 0, f = 0
    cdef uint32_t spill = 0
    nr_object_pin(&reg.r, oid, &data, &size, &spill, &f)
    if data:
        nr_object_unpin(&reg.r, oid)
    return spill == NR_SPILL_DONE and f == file


cdef uint64_t _pin_payload(Region reg, uint64_t oid, int *state) except? 0:
    """Pins an object's payload in memory (restoring it if spilled) and
    returns its offset; 0 when it has none.  The caller unpins it (only
    when the offset is not 0)."""
    cdef uint64_t data = 0, size = 0, file = 0
    cdef uint32_t spill = 0
    cdef int st
    cdef int64_t slice_ns = 10 * 1000 * 1000
    while True:
        st = nr_object_pin(&reg.r, oid, &data, &size, &spill, &file)
        state[0] = st
        if data == 0 and spill == NR_SPILL_NONE and (st == NR_OBJ_PENDING or st == NR_OBJ_READY):
            # Read without the lock: the seal this reader saw was undone (its
            # process died inside that section, and the section was rolled
            # back); the task runs again and seals it anew.  A value always
            # has a payload, so READY with none is that too.
            if st == NR_OBJ_READY:
                nr_object_unpin(&reg.r, oid)
            if reg.r.hdr.shutdown:
                return 0
            with nogil:
                nr_object_wait(&reg.r, oid, slice_ns, 0)
            PyErr_CheckSignals()
            continue
        if st < 0 or data or spill == NR_SPILL_NONE:
            return data
        if spill == NR_SPILL_WRITING:           # being written out: wait for it
            time.sleep(0.0002)
        else:
            _restore(reg, oid, file, size)


def no_spilling():
    """This process never spills (the zygote: it shares the driver's slot);
    processes forked from it do."""
    global _no_spill_pid
    _no_spill_pid = getpid()


def spill_dir(Region reg):
    """Where this runtime's spilled objects go (None if not set)."""
    d = os.fsdecode(<bytes>reg.r.hdr.spill_dir)
    return d or None


def set_spill_dir(Region reg, path):
    if nr_spill_set_dir(&reg.r, os.fsencode(path)) != 0:
        raise ValueError("object_spilling_directory is too long: %r" % (path,))
