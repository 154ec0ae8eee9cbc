"""What workers print, as Ray shows it: each line reaches the driver's
terminal prefixed with what printed it, "(f pid=1234) " for task f and
"(Counter pid=1234) " for an actor of class Counter.  Workers share the
driver's stdout and stderr, so the lines arrive in order, each written
whole in one system call (lines of different processes never mix within
a line).  init(log_to_driver=False) silences workers: their stdout and
stderr go to /dev/null, C-level output and child programs included."""

import io
import os
import sys
import threading


class _Prefixed(io.TextIOBase):
    """A text stream that writes whole lines to `stream`, each prefixed."""

    def __init__(self, stream, name_of):
        self._stream = stream
        self._name_of = name_of
        self._buf = ""
        self._line_start = True
        self._lock = threading.Lock()

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        with self._lock:
            self._buf += s
            if "\n" in s or len(self._buf) > 65536:
                self._emit(False)
        return len(s)

    def flush(self):
        with self._lock:
            if self._buf:
                self._emit(True)
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def _emit(self, everything):
        """Writes the complete lines held (everything: the rest too)."""
        if everything or len(self._buf) > 65536:
            chunk, self._buf = self._buf, ""
        else:
            cut = self._buf.rfind("\n") + 1
            chunk, self._buf = self._buf[:cut], self._buf[cut:]
        if not chunk:
            return
        name = self._name_of()
        prefix = "(%s pid=%d) " % (name, os.getpid()) if name else "(pid=%d) " % os.getpid()
        out = []
        for piece in chunk.splitlines(True):
            if self._line_start:
                out.append(prefix)
            out.append(piece)
            self._line_start = piece.endswith(("\n", "\r"))
        try:
            self._stream.write("".join(out))
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def fileno(self):
        return self._stream.fileno()

    def isatty(self):
        return self._stream.isatty()

    @property
    def encoding(self):
        return self._stream.encoding

    @property
    def errors(self):
        return self._stream.errors

    @property
    def buffer(self):
        return self._stream.buffer


def install(log_to_driver, name_of):
    """In a worker, before it runs anything."""
    if not log_to_driver:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        return
    for attr in ("stdout", "stderr"):
        stream = getattr(sys, attr)
        if stream is not None and not isinstance(stream, _Prefixed):
            setattr(sys, attr, _Prefixed(stream, name_of))
