"""What workers print, as Ray shows it: each line reaches the driver's
terminal prefixed with what printed it, "(f pid=1234) " for task f and
"(Counter pid=1234) " for an actor of class Counter (the task or actor
that began the line).  Workers share the driver's stdout and stderr, and
output goes out by whole lines, each in one write, as Ray's does: a line
begun without its newline (print(end=""), even with flush=True) waits for
it, or for the process's end, so that lines never mix; lines up to
PIPE_BUF (4 KiB) never mix with other processes' output; longer ones may,
as with any processes writing to one pipe.  What bypasses sys.stdout (bytes written to
sys.stdout.buffer, C libraries, child programs) arrives unprefixed.
init(log_to_driver=False) silences workers: their stdout and stderr go to
/dev/null, C-level output and child programs included (tracebacks too).

Once a worker has drawn a nanoray.experimental.tqdm_ray bar, its lines go
to the driver through the bars' socket instead (`route`), so that the
driver hides its bars while it prints them, as Ray's log monitor does.
(What bypasses sys.stdout is not routed, and may then show before lines
printed earlier.)"""

import io
import os
import sys
import threading

# route(err, text) -> bool: set by tqdm_ray in a worker whose bars reach the
# driver; True when it took the text (else it is written here as usual).
route = None


class _Prefixed(io.TextIOBase):
    """A text stream that writes whole lines to `stream`, each prefixed."""

    def __init__(self, stream, name_of, err=False):
        self._stream = stream
        self._err = err                    # stderr (for route)
        self._name_of = name_of
        self._buf = ""
        self._name = None                  # who began the text held in _buf
        self._line_start = True
        self._lock = threading.RLock()     # a signal handler may print inside write()

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        with self._lock:
            if not self._buf:
                self._name = self._name_of()
            self._buf += s
            if "\n" in s or len(self._buf) > 65536:
                self._emit(False)
        return len(s)

    def flush(self):
        """Whole lines only: a line not yet ended waits for its newline."""
        with self._lock:
            if "\n" in self._buf:
                self._emit(False)
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def flush_all(self):
        """Everything held, an unended line too (the process is ending)."""
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
        name = self._name
        if self._buf:
            self._name = self._name_of()
        prefix = "(%s pid=%d) " % (name, os.getpid()) if name else "(pid=%d) " % os.getpid()
        out = []
        for piece in chunk.splitlines(True):
            if self._line_start:
                out.append(prefix)
            out.append(piece)
            self._line_start = piece.endswith(("\n", "\r"))
        text = "".join(out)
        if route is not None and route(self._err, text):
            return
        try:
            try:
                self._stream.write(text)
            except UnicodeEncodeError:     # as print() would show it, not lost
                enc = getattr(self._stream, "encoding", None) or "utf-8"
                self._stream.write(text.encode(enc, "backslashreplace").decode(enc))
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def fileno(self):
        return self._stream.fileno()

    def isatty(self):
        return self._stream.isatty()

    def reconfigure(self, **kwargs):
        self.flush_all()
        self._stream.reconfigure(**kwargs)

    def __getattr__(self, name):           # encoding, errors, buffer, name, line_buffering...
        return getattr(self._stream, name)

    @property
    def encoding(self):
        return self._stream.encoding

    @property
    def errors(self):
        return self._stream.errors


def flush_all():
    """Before a worker's process ends: what it printed, unended lines too."""
    for stream in (sys.stdout, sys.stderr):
        try:
            getattr(stream, "flush_all", stream.flush)()
        except Exception:
            pass


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
            setattr(sys, attr, _Prefixed(stream, name_of, attr == "stderr"))
