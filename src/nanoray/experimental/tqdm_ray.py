"""Ray's tqdm for tasks and actors: the bars are drawn by the driver.

    from nanoray.experimental.tqdm_ray import tqdm

    @ray.remote
    def work(n):
        for i in tqdm(range(n), desc="work"):
            ...

A bar made in a task or an actor is drawn by the driver, with every other
bar of the program, each on a line of its own (tqdm's position), as Ray
draws them.  The worker sends the bar's state, a small JSON message, at
most once per flush_interval_s and always when the bar closes; a thread in
the driver receives the states and draws real tqdm bars (tqdm.auto: a
widget in Jupyter).  tqdm is optional: without it the driver draws plain
text bars (nanoray/_progress.py).  A bar made in the driver itself draws
there directly.

The channel is a Unix datagram socket:
- The driver binds it when it imports this module while nanoray runs, or
  at init() once it has imported it.  Nothing exists before that, so a
  program that never uses tqdm_ray pays nothing for it.
- Its address is in Linux's abstract namespace, named after the runtime's
  session: there is no file to remove, and it is gone with the driver
  however the driver ends.  Only datagrams from processes of the driver's
  own user are taken (SO_PASSCRED says who sent each one).
- A worker connects at its first bar.  It sends updates without waiting
  (one the driver has no room for is superseded by the next), and waits up
  to WAIT_S for a bar's close and for its printed lines.
- A datagram arrives whole or not at all, so a worker that dies mid-bar
  breaks nothing; the driver closes the bars of processes that are gone
  (checked once a second while any are open).
- shutdown() draws what has arrived, stops the thread and closes the socket.
- When the driver never imported this module (only a task does), there is
  nothing to send to: the worker then prints its bar as a line of its own
  output, once per flush interval and when it closes.

Once a worker has drawn a bar, its printed lines go to the driver through
the same socket (nanoray/_output.py): the driver hides its bars, prints the
lines and draws the bars again, so lines and bars do not clobber each
other.  In the driver, print() becomes safe_print() when the first bar
appears, as in Ray; NANORAY_TQDM_PATCH_PRINT=0 (or Ray's
RAY_TQDM_PATCH_PRINT=0) leaves print alone."""

import builtins
import errno
import json
import os
import select
import socket
import struct
import sys
import threading
import time
import uuid

from nanoray import _output, _progress
from nanoray.experimental._bar_manager import RAY_TQDM_MAGIC, _BarManager

__all__ = ["tqdm", "safe_print", "instance", "RAY_TQDM_MAGIC"]

# The largest datagram either side handles; longer output is written directly.
MAX_DATAGRAM = 1 << 16
# How long a worker waits for room in the driver's queue for a bar's close
# or a printed line; after one such wait times out it no longer waits.
WAIT_S = 2.0
# How often the driver looks for bars whose process is gone (seconds).
LIVENESS_S = 1.0
# The most datagrams the driver takes before drawing what they said.
BATCH = 256

_print = builtins.print
_manager = None            # the driver's _BarManager (instance())
_listener = None           # the driver's _Listener, while nanoray runs
_sender = None             # a worker's _Sender
_lock = threading.Lock()   # guards the three


def safe_print(*args, **kwargs):
    """print() that does not corrupt the bars: they are hidden while it prints."""
    file = kwargs.get("file")
    mgr = _manager
    if mgr is None or (file is not None and file is not sys.stdout and file is not sys.stderr):
        return _print(*args, **kwargs)
    with mgr.lock:
        mgr.hide_bars()
        try:
            _print(*args, **kwargs)
        finally:
            mgr.unhide_bars()


class tqdm:
    """Ray's distributed tqdm (a subset of tqdm's arguments).  In a task or
    an actor the driver draws the bar; in the driver it is drawn here.  Its
    state is sent at most once per flush_interval_s, and when it closes."""

    def __init__(self, iterable=None, desc=None, total=None, unit=None, position=None,
                 flush_interval_s=1.0):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._desc = "" if desc is None else str(desc)
        self._total = total
        self._unit = unit or "it"
        self._pos = position or 0
        self._uuid = uuid.uuid4().hex
        self._x = 0
        self._closed = False
        self._flush_interval_s = flush_interval_s
        self._last_flush = 0.0
        self._t0 = time.monotonic()
        self._dump_state(force=True)          # shown at once, as tqdm's bars are

    def set_description(self, desc=None, refresh=True):
        self._desc = "" if desc is None else str(desc)
        self._dump_state(force=False)

    def update(self, n=1):
        self._x += n
        self._dump_state()

    def refresh(self):
        self._dump_state(force=True)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._dump_state(force=True)

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, total):
        self._total = total

    @property
    def n(self):
        """The count so far (tqdm's n)."""
        return self._x

    def __iter__(self):
        if self._iterable is None:
            raise ValueError("No iterable provided")
        try:
            for x in self._iterable:
                yield x
                self.update(1)                # counts items done, as tqdm does
        finally:
            self.close()                      # at the end, a break, or an exception

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if not self._closed and not sys.is_finalizing():
                self.close()
        except Exception:
            pass

    def _get_state(self):
        return {"__magic_token__": RAY_TQDM_MAGIC, "x": _number(self._x), "pos": int(self._pos),
                "desc": self._desc, "total": None if self._total is None else _number(self._total),
                "unit": str(self._unit),
                "pid": os.getpid(), "uuid": self._uuid, "closed": self._closed,
                "name": _process_name()}

    def _dump_state(self, force=False):
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_interval_s:
            return
        self._last_flush = now
        state = self._get_state()
        session = _worker_session()
        if session is None:
            instance().process_state_update(state)        # the driver: drawn here
        elif _send(session, b"S" + json.dumps(state, default=str).encode(),
                   wait=self._closed) == _NONE:
            # No driver listening (it never imported tqdm_ray): the bar as a
            # line of this worker's output instead.
            print(_progress.plain_line(self._desc or "tqdm_ray", self._x, self._total,
                                       now - self._t0, self._unit),
                  file=sys.stderr, flush=True)


def _number(n):
    """A count as JSON has it (numpy's scalars too)."""
    return int(n) if float(n).is_integer() else float(n)


def _process_name():
    """What prefixes this process's output: a task's function, an actor's class."""
    try:
        from nanoray._core import _runtime as rt
        return rt.output_name() if _worker_session() is not None else ""
    except Exception:
        return ""


def _worker_session():
    """The runtime's session when this process is a worker (or a child a
    worker forked), None in a driver or with nanoray not running."""
    from nanoray import _api
    b = _api._backend
    if b is None or b.zygote is not None or b.num_cpus is not None:
        return None                           # no runtime, or the driver's
    return b.region.session


def _address(session):
    # Linux's abstract namespace (the leading NUL): no file in the filesystem.
    return b"\0nanoray-%016x-bars" % session


# --- a worker's end ---------------------------------------------------------

_SENT, _BUSY, _NONE = 0, 1, 2


class _Sender:
    """A datagram socket connected to the driver's listener."""

    def __init__(self, session):
        self.session = session
        self.sock = None
        self.stalled = False          # a wait timed out: the driver is stuck; wait no more
        self.lock = threading.Lock()

    def send(self, data, wait):
        """_SENT; _BUSY (no room in the driver's queue, or too long); or
        _NONE (no driver listening)."""
        if len(data) > MAX_DATAGRAM:
            return _BUSY
        with self.lock:
            if self.sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                try:
                    sock.connect(_address(self.session))
                except OSError:
                    sock.close()
                    return _NONE
                self.sock = sock
            # Connected, a full queue makes send() wait (or fail at once).
            self.sock.settimeout(WAIT_S if wait and not self.stalled else 0.0)
            try:
                self.sock.send(data)
                return _SENT
            except (BlockingIOError, InterruptedError):
                return _BUSY
            except socket.timeout:
                self.stalled = True
                return _BUSY
            except OSError as e:
                if e.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                    return _BUSY
                self.sock.close()             # the listener is gone (ECONNREFUSED)
                self.sock = None
                return _NONE


def _send(session, data, wait):
    global _sender
    s = _sender
    if s is None or s.session != session:
        with _lock:
            s = _sender
            if s is None or s.session != session:
                s = _sender = _Sender(session)
    result = s.send(data, wait)
    if result == _SENT and _output.route is None:
        _output.route = _route                # this worker's lines go by the driver too
    return result


def _route(err, text):
    """_output's route: a worker's printed lines, sent for the driver to print."""
    s = _sender
    if s is None or s.stalled or _worker_session() != s.session:
        return False
    data = (b"E" if err else b"O") + text.encode("utf-8", "backslashreplace")
    return s.send(data, wait=True) == _SENT


# --- the driver's end -------------------------------------------------------

class _Listener:
    """The bound socket, and a thread that receives what workers send and
    gives it to the bar manager."""

    def __init__(self, session):
        self.session = session
        self.owner = os.getpid()
        self.stopping = False
        sock = socket.socket(socket.AF_UNIX,
                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(_address(session))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.thread = threading.Thread(target=self._run, name="nanoray-tqdm_ray", daemon=True)
        self.thread.start()

    def _run(self):
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        checked = time.monotonic()
        while True:                           # ends only after a drain begun once stopping
            mgr = _manager
            busy = mgr is not None and mgr.has_remote_bars()
            try:
                poller.poll(LIVENESS_S * 1000 if busy else None)
            except (InterruptedError, ValueError, OSError):
                pass
            stop = self.stopping              # read before draining: nothing is missed
            while self._receive() and stop:   # stopping: everything that has arrived
                pass
            if busy and time.monotonic() - checked >= LIVENESS_S:
                checked = time.monotonic()
                _manager.close_lost_bars()
            if stop:
                return

    def _receive(self):
        """Takes the datagrams queued, up to a batch (workers that keep
        printing must not keep the thread from drawing), and hands them
        over; True when the batch was full and more may wait."""
        batch, taken, uid = [], 0, os.getuid()
        while taken < BATCH:
            try:
                data, anc, flags, _ = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:                   # closed under a stuck thread by stop()
                break
            taken += 1
            pid = sender_uid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, sender_uid, _ = struct.unpack("3i", payload[:12])
            if pid is not None and sender_uid == uid and not flags & socket.MSG_TRUNC:
                batch.append((pid, data))
        if batch:
            instance().process_messages(batch)
        return taken == BATCH

    def stop(self):
        """Draws what has arrived, ends the thread and closes the socket."""
        self.stopping = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=5)       # a thread stuck writing is a daemon: let it be
        self.close_fds()

    def close_fds(self):
        self.sock.close()
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _driver_started():
    """nanoray runs in this process, the driver, with tqdm_ray imported:
    listen for the workers' bars.  Called at import and by init()."""
    global _listener
    from nanoray import _api
    b = _api._backend
    if b is None or b.zygote is None or b.pid != os.getpid():
        return                                # not a driver with nanoray running
    with _lock:
        old = _listener
        if old is not None and old.session == b.region.session:
            return
        _listener = None
    if old is not None:
        old.stop()
    try:
        listener = _Listener(b.region.session)
    except OSError as e:
        _print("nanoray: tqdm_ray bars of tasks cannot reach the driver (%s); tasks will "
               "print them as lines" % (e,), file=sys.stderr)
        return
    with _lock:
        _listener = listener


def _driver_stopped():
    """shutdown(): the workers are gone; draw what they sent, stop listening,
    and close their bars that are still open."""
    global _listener
    with _lock:
        listener, _listener = _listener, None
    if listener is not None and listener.owner == os.getpid():
        listener.stop()
    if _manager is not None:
        _manager.close_remote_bars()


def _after_fork_in_child():
    # The listener's thread is the parent's, as are its socket and the
    # worker's connection: a child lets go of its copies.
    global _listener, _sender, _manager, _lock
    _lock = threading.Lock()
    listener, _listener = _listener, None
    if listener is not None:
        listener.close_fds()
    sender, _sender = _sender, None
    if sender is not None and sender.sock is not None:
        sender.sock.close()
    _manager = None                           # the parent's bars are not the child's


os.register_at_fork(after_in_child=_after_fork_in_child)


def _patch_print():
    flag = os.environ.get("NANORAY_TQDM_PATCH_PRINT", os.environ.get("RAY_TQDM_PATCH_PRINT", "1"))
    if flag.strip().lower() not in ("0", "false", "no") and builtins.print is _print:
        builtins.print = safe_print


def instance():
    """The driver's bar manager (made on first use)."""
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                _manager = _BarManager()
                _patch_print()                # as Ray's does, when the first bar appears
    return _manager


_driver_started()                             # imported in a driver with nanoray running
