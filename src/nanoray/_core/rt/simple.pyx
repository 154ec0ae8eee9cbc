# Simple values as pickle protocol 5 streams, without a Pickler.
# Included by _runtime.pyx: one extension module, one concern per file;
# serial.pyx's _pickle and _load call these first.


cdef object _NOT_SCALAR = object()

# Simple values (None, bools, ints of 64 bits, floats, str and bytes of at
# most 255 bytes, and tuples of them nested up to 4 deep) are written and read
# as pickle protocol 5 streams directly, not through a Pickler or Unpickler,
# which cost more than the rest of submitting, sealing or getting one: a
# task's (args, kwargs) of a few such arguments, a return of one.  The
# streams are what pickle.loads reads the same way; the reader takes only
# the opcodes the writer writes and hands anything else to pickle.
cdef enum:
    SIMPLE_MAX = 512             # bytes of a simple stream, PROTO to STOP
    SIMPLE_DEPTH = 4
    SIMPLE_MARKS = 8
    SIMPLE_STACK = 260           # values pending on the reader's stack
    SIMPLE_SEEN = 128            # str, bytes and tuples in one stream


ctypedef struct _Seen:          # the str, bytes and tuples a stream holds so far
    int n
    PyObject *at[SIMPLE_SEEN]


cdef bint _seen_again(object v, _Seen *seen):
    """True when v was met before in this stream, or too many were: pickle
    then writes it, whose memo keeps one object shared (as it was)."""
    cdef int i
    for i in range(seen.n):
        if seen.at[i] == <PyObject *>v:
            return True
    if seen.n == SIMPLE_SEEN:
        return True
    seen.at[seen.n] = <PyObject *>v
    seen.n += 1
    return False


cdef int _put_simple(object v, unsigned char *buf, int n, int depth, _Seen *seen):
    """Appends v's opcodes at buf[n:]; returns the new length, or -1 when v
    is not simple or the stream would not fit SIMPLE_MAX (with its STOP)."""
    cdef type t = type(v)
    cdef long long x
    cdef int overflow = 0, i, k
    cdef uint64_t bits
    cdef double d
    cdef Py_ssize_t sz
    cdef const char *c
    if v is None:
        if n + 2 > SIMPLE_MAX:
            return -1
        buf[n] = 78                          # NONE
        return n + 1
    if t is bool:
        if n + 2 > SIMPLE_MAX:
            return -1
        buf[n] = 0x88 if v is True else 0x89  # NEWTRUE / NEWFALSE
        return n + 1
    if t is int:
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow:
            return -1
        if -2147483648 <= x <= 2147483647:
            if n + 6 > SIMPLE_MAX:
                return -1
            buf[n] = 74                      # BININT: 4 bytes, little-endian
            for i in range(4):
                buf[n + 1 + i] = (<uint64_t>x >> (8 * i)) & 0xFF
            return n + 5
        if n + 11 > SIMPLE_MAX:
            return -1
        buf[n] = 0x8a                        # LONG1: 8 bytes, two's complement
        buf[n + 1] = 8
        for i in range(8):
            buf[n + 2 + i] = (<uint64_t>x >> (8 * i)) & 0xFF
        return n + 10
    if t is float:
        if n + 10 > SIMPLE_MAX:
            return -1
        d = PyFloat_AS_DOUBLE(v)
        memcpy(&bits, &d, 8)
        buf[n] = 71                          # BINFLOAT: 8 bytes, big-endian
        for i in range(8):
            buf[n + 1 + i] = (bits >> (8 * (7 - i))) & 0xFF
        return n + 9
    if t is str or t is bytes:
        if len(v) > 255 or _seen_again(v, seen):
            return -1
        if t is str:
            c = PyUnicode_AsUTF8AndSize(v, &sz)
            if c == NULL:                    # a lone surrogate: pickle's own way
                PyErr_Clear()
                return -1
        else:
            c = PyBytes_AS_STRING(v)
            sz = PyBytes_GET_SIZE(v)
        if sz > 255 or n + 3 + sz > SIMPLE_MAX:
            return -1
        buf[n] = 0x8c if t is str else 0x43  # SHORT_BINUNICODE / SHORT_BINBYTES
        buf[n + 1] = <unsigned char>sz
        memcpy(buf + n + 2, c, sz)
        return n + 2 + <int>sz
    if t is tuple:
        k = <int>len(<tuple>v)
        if depth >= SIMPLE_DEPTH or k > 64 or (k and _seen_again(v, seen)):
            return -1
        if k > 3:
            if n + 2 > SIMPLE_MAX:
                return -1
            buf[n] = 40                      # MARK
            n += 1
        for i in range(k):
            n = _put_simple((<tuple>v)[i], buf, n, depth + 1, seen)
            if n < 0:
                return -1
        if n + 2 > SIMPLE_MAX:
            return -1
        buf[n] = (0x29 if k == 0 else 0x85 if k == 1 else 0x86 if k == 2
                  else 0x87 if k == 3 else 116)   # EMPTY_TUPLE, TUPLE1-3, TUPLE
        return n + 1
    return -1


cdef int _simple_into(object value, unsigned char *buf):
    """Writes the pickle stream of a simple value (above), PROTO to STOP, at
    buf (SIMPLE_MAX bytes); returns its length, or -1 if it is not simple."""
    cdef _Seen seen
    seen.n = 0
    buf[0] = 0x80
    buf[1] = 5
    cdef int n = _put_simple(value, buf, 2, 0, &seen)
    if n < 0:
        return -1
    buf[n] = 46                              # STOP
    return n + 1


cdef int _simple_call_into(object args, object kwargs, object method, unsigned char *buf):
    """What _simple_into writes for a task's arguments, (args, kwargs) or
    (args, kwargs, method) if method is not None, without building the tuple."""
    cdef _Seen seen
    seen.n = 0
    buf[0] = 0x80
    buf[1] = 5
    cdef int n = _put_simple(args, buf, 2, 1, &seen)
    if n >= 0:
        n = _put_simple(kwargs, buf, n, 1, &seen)
    if n >= 0 and method is not None:
        n = _put_simple(method, buf, n, 1, &seen)
    if n < 0 or n + 2 > SIMPLE_MAX:
        return -1
    buf[n] = 0x86 if method is None else 0x87     # TUPLE2 / TUPLE3
    buf[n + 1] = 46                               # STOP
    return n + 2


cdef bytes _scalar_stream(object value):
    """The pickle stream of a simple value (above); else None."""
    cdef unsigned char buf[SIMPLE_MAX]
    cdef int n = _simple_into(value, buf)
    if n < 0:
        return None
    return PyBytes_FromStringAndSize(<char *>buf, n)


cdef int _push(PyObject **stack, int *sp, object v) except -1:
    """Pushes a new reference to v (the stack owns it)."""
    if sp[0] == SIMPLE_STACK:
        return 1
    Py_INCREF(v)
    stack[sp[0]] = <PyObject *>v
    sp[0] += 1
    return 0


cdef int _simple_parse(const unsigned char *s, uint64_t n, PyObject **stack, int *sp) except -1:
    """Runs the opcodes of s[2:n-1] onto stack: 0, or 1 for an opcode or a
    shape the writer does not make."""
    cdef uint64_t i = 2, end = n - 1, bits
    cdef uint32_t u
    cdef int64_t x
    cdef double d
    cdef int k, j, nm = 0, base
    cdef int marks[SIMPLE_MARKS]
    cdef unsigned char op
    while i < end:
        op = s[i]
        i += 1
        if op == 78 or op == 0x88 or op == 0x89:
            if _push(stack, sp, None if op == 78 else op == 0x88):
                return 1
        elif op == 74:
            if i + 4 > end:
                return 1
            u = 0
            for j in range(4):
                u |= (<uint32_t>s[i + j]) << (8 * j)
            if _push(stack, sp, <int32_t>u):
                return 1
            i += 4
        elif op == 0x8a:
            if i + 1 > end:
                return 1
            k = s[i]
            if k > 8 or i + 1 + k > end:
                return 1
            bits = 0
            for j in range(k):
                bits |= (<uint64_t>s[i + 1 + j]) << (8 * j)
            if 0 < k < 8 and (s[i + k] & 0x80):
                bits |= ~((<uint64_t>1 << (8 * k)) - 1)     # sign-extend
            x = <int64_t>bits
            if _push(stack, sp, x):
                return 1
            i += 1 + k
        elif op == 71:
            if i + 8 > end:
                return 1
            bits = 0
            for j in range(8):
                bits = (bits << 8) | s[i + j]
            memcpy(&d, &bits, 8)
            if _push(stack, sp, d):
                return 1
            i += 8
        elif op == 0x8c or op == 0x43:
            if i + 1 > end:
                return 1
            k = s[i]
            if i + 1 + k > end:
                return 1
            if op == 0x8c:
                v = PyUnicode_DecodeUTF8(<const char *>s + i + 1, k, "surrogatepass")
            else:
                v = PyBytes_FromStringAndSize(<const char *>s + i + 1, k)
            if _push(stack, sp, v):
                return 1
            i += 1 + k
        elif op == 40:
            if nm == SIMPLE_MARKS:
                return 1
            marks[nm] = sp[0]
            nm += 1
        elif op == 0x29:
            if _push(stack, sp, ()):
                return 1
        elif op == 0x85 or op == 0x86 or op == 0x87 or op == 116:
            base = marks[nm - 1] if nm else 0
            if op == 116:
                if nm == 0:
                    return 1
                k = sp[0] - base
                nm -= 1
            else:
                k = op - 0x84
                if sp[0] - base < k:
                    return 1
            t = PyTuple_New(k)
            for j in range(k):                # the tuple takes the stack's references
                _tuple_steal(t, j, stack[sp[0] - k + j])
            sp[0] -= k
            if _push(stack, sp, t):
                return 1
        else:
            return 1
    return 1 if nm or sp[0] != 1 else 0


cdef object _scalar_load(const unsigned char *s, uint64_t n):
    """The value of a stream _scalar_stream writes; _NOT_SCALAR for any
    other (pickle reads those)."""
    if n < 4 or n > SIMPLE_MAX or s[0] != 0x80 or s[1] != 5 or s[n - 1] != 46:
        return _NOT_SCALAR
    if n == 4:                               # one opcode: the common returns
        if s[2] == 78:
            return None
        if s[2] == 0x88:
            return True
        if s[2] == 0x89:
            return False
    cdef PyObject *stack[SIMPLE_STACK]
    cdef int sp = 0, j, bad = 1
    try:
        bad = _simple_parse(s, n, stack, &sp)
        if not bad:
            return <object>stack[0]
    except UnicodeDecodeError:
        pass                                 # not one of the writer's: pickle says why
    finally:
        for j in range(sp):
            Py_XDECREF(stack[j])
    return _NOT_SCALAR
