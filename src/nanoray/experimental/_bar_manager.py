"""The driver's side of tqdm_ray: the bars of every process, drawn with
tqdm (tqdm.auto) when it is installed, else as plain text bars
(nanoray/_progress.py).  nanoray.experimental.tqdm_ray feeds it: the states
its listener receives from workers, and the driver's own bars."""

import builtins
import collections
import json
import os
import sys
import threading
import time

from nanoray import _progress

# Marks a bar's state, as in Ray.
RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"

_print = builtins.print                       # not safe_print, which calls us


_tqdm_class = False                           # not looked up yet


def _real_tqdm():
    """tqdm.auto's bar class, or None when tqdm is not installed.  Its bars
    here start no tqdm monitor thread: they are redrawn as states arrive."""
    global _tqdm_class
    if _tqdm_class is False:
        try:
            from tqdm.auto import tqdm as auto
        except ImportError:
            _tqdm_class = None
        else:
            _tqdm_class = type("tqdm", (auto,), {"monitor_interval": 0})
    return _tqdm_class


class _Bar:
    """A bar the driver draws: a tqdm bar, or (without tqdm) the state the
    manager's plain line shows."""

    def __init__(self, state, position, label, cls, file):
        self.state = state
        self.position = position
        self.t0 = time.monotonic()
        self.tq = None
        if cls is not None:
            self.tq = cls(desc=label, total=state["total"], unit=state["unit"],
                          position=position, leave=False, dynamic_ncols=True, file=file)
            if state["x"]:
                self.tq.update(state["x"])

    def update(self, state, label):
        old, self.state = self.state, state
        if self.tq is None:
            return
        if state["desc"] != old["desc"]:
            self.tq.set_description(label, refresh=False)
        if state["total"] != old["total"]:
            self.tq.total = state["total"]
            self.tq.refresh()
        if state["x"] != old["x"]:
            self.tq.update(state["x"] - old["x"])

    def move(self, position):
        if position != self.position:
            self.position = position
            if self.tq is not None:
                self.tq.clear()
                self.tq.pos = -position       # tqdm keeps a fixed position negated
                self.tq.refresh()

    def close(self):
        if self.tq is not None:
            self.tq.close()


class _BarManager:
    """Every bar of the program, drawn by the driver.  Each process's bars
    form a group; groups are stacked in the order they appeared, and a bar
    sits at its group's offset plus its own position, so that bars of
    different processes never share a line (as Ray's _BarManager does)."""

    def __init__(self):
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.groups = {}                      # pid -> {uuid: _Bar}, oldest group first
        self.starts = {}                      # pid -> its start time (tells pids apart)
        self.in_hidden_state = False
        self.num_hides = 0
        self.file = None                      # where bars are drawn (None: sys.stderr)
        self.finished = collections.deque(maxlen=256)   # final states of closed bars
        self._plain_drawn = 0.0               # plain bars: when last drawn, and whether
        self._plain_shown = False             # their line is on the screen now

    # What arrives.

    def process_messages(self, batch):
        """A batch from the listener: bar states, and workers' printed lines
        (printed with the bars hidden, redrawn after the batch)."""
        with self.lock:
            hid = False
            for pid, data in batch:
                try:
                    kind, body = data[:1], data[1:]
                    if kind == b"S":
                        state = json.loads(body)
                        if _valid(state):
                            state["pid"] = pid                 # as the kernel says
                            self.process_state_update(state)
                    elif kind in (b"O", b"E"):
                        if not hid:
                            self.hide_bars()
                            hid = True
                        _write(sys.stderr if kind == b"E" else sys.stdout,
                               body.decode("utf-8", "replace"))
                except Exception as e:       # one bad message never stops the others
                    _report_once(e)
            if hid:
                self.unhide_bars()

    def process_state_update(self, state):
        """Applies a bar's state: creates the bar the first time, and
        closes it when the state says closed."""
        with self.lock:
            if self.in_hidden_state:
                self.unhide_bars()
            pid, key = state["pid"], state["uuid"]
            group = self.groups.get(pid)
            if group is None:
                group = self.groups[pid] = {}
                if pid != self.pid and pid not in self.starts:
                    self.starts[pid] = _start_time(pid)
            bar = group.get(key)
            if bar is None:
                position = self._offset(pid) + state["pos"]
                group[key] = _Bar(state, position, self._label(state), _real_tqdm(),
                                  self.file)
                self._layout()
            else:
                bar.update(state, self._label(state))
            if state["closed"]:
                self._close(pid, key)
            elif _real_tqdm() is None:
                self._draw_plain()

    # Hiding (around other output).

    def hide_bars(self):
        """Clears the bars from the screen, until unhide_bars()."""
        with self.lock:
            if self.in_hidden_state or not self.groups:
                return
            self.in_hidden_state = True
            self.num_hides += 1
            if _real_tqdm() is None:
                self._clear_plain()
            for bar in self._bars():
                bar.tq.clear()

    def unhide_bars(self):
        with self.lock:
            if not self.in_hidden_state:
                return
            self.in_hidden_state = False
            if _real_tqdm() is None:
                self._draw_plain(force=True)
            for bar in self._bars():
                bar.tq.refresh()

    # Bars of processes that are gone.

    def has_remote_bars(self):
        return any(pid != self.pid for pid in self.groups)

    def close_lost_bars(self):
        """Closes the bars of worker processes that have ended."""
        with self.lock:
            for pid in [p for p in self.groups if p != self.pid]:
                start = self.starts.get(pid)
                if start is None or _start_time(pid) != start:
                    self._close_group(pid)

    def close_remote_bars(self):
        """At shutdown: every worker is gone, and so are its bars."""
        with self.lock:
            for pid in [p for p in self.groups if p != self.pid]:
                self._close_group(pid)

    def states(self):
        """The open bars' states (copies), each with the line it is drawn at."""
        with self.lock:
            return [dict(b.state, position=b.position)
                    for g in self.groups.values() for b in g.values()]

    # Inside.

    def _bars(self):
        return [b for g in self.groups.values() for b in g.values() if b.tq is not None]

    def _label(self, state):
        if state["pid"] == self.pid:
            return state["desc"]
        name = state.get("name")
        return "(%s pid=%d) %s" % (name, state["pid"], state["desc"]) if name else \
            "(pid=%d) %s" % (state["pid"], state["desc"])

    def _slots(self, group):
        return 1 + max(b.state["pos"] for b in group.values()) if group else 0

    def _offset(self, pid):
        offset = 0
        for p, group in self.groups.items():
            if p == pid:
                break
            offset += self._slots(group)
        return offset

    def _layout(self):
        offset = 0
        for group in self.groups.values():
            for bar in group.values():
                bar.move(offset + bar.state["pos"])
            offset += self._slots(group)

    def _close(self, pid, key, lost=False):
        group = self.groups[pid]
        bar = group.pop(key)
        if not group:
            del self.groups[pid]
            self.starts.pop(pid, None)
        state = dict(bar.state, closed=True, lost=lost)
        self.finished.append(state)
        if bar.tq is not None:
            bar.close()
            self._layout()
        else:
            self._close_plain(bar, state)

    def _close_group(self, pid):
        for key in list(self.groups.get(pid, ())):
            self._close(pid, key, lost=True)
        self.groups.pop(pid, None)            # even one left empty by a failed draw
        self.starts.pop(pid, None)

    # Plain bars (no tqdm): on a terminal one line, redrawn in place, shows
    # every open bar; each bar leaves a line of its own when it closes.
    # Elsewhere (a log, a pipe) only those closing lines are written.

    def _out(self):
        return self.file if self.file is not None else sys.stderr

    def _plain_text(self, bar, now):
        return _progress.plain_line(self._label(bar.state), bar.state["x"], bar.state["total"],
                                    now - bar.t0, bar.state["unit"])

    def _live(self):
        out = self._out()
        try:
            return out is not None and out.isatty()
        except (AttributeError, ValueError):
            return False

    def _draw_plain(self, force=False):
        now = time.monotonic()
        if self.in_hidden_state or not self._live() or \
                (not force and now - self._plain_drawn < 0.1):
            return
        self._plain_drawn = now
        bars = [b for g in self.groups.values() for b in g.values()]
        if not bars:
            return self._clear_plain()
        try:
            width = os.get_terminal_size(self._out().fileno()).columns - 1
        except (AttributeError, OSError, ValueError):
            width = 0
        if width <= 0:
            width = 79                        # a terminal that does not say
        line = " | ".join(self._plain_text(b, now) for b in bars)[:width]
        _write(self._out(), "\r" + line + "\x1b[K")
        self._plain_shown = True

    def _clear_plain(self):
        if self._plain_shown:
            _write(self._out(), "\r\x1b[K")
            self._plain_shown = False

    def _close_plain(self, bar, state):
        self._clear_plain()
        _write(self._out(), self._plain_text(bar, time.monotonic()) + "\n")
        self._draw_plain(force=True)


def _valid(state):
    """A bar's state as tqdm_ray sends it (what else arrives is dropped)."""
    number = (int, float)
    return isinstance(state, dict) and state.get("__magic_token__") == RAY_TQDM_MAGIC and \
        isinstance(state.get("uuid"), str) and isinstance(state.get("desc"), str) and \
        isinstance(state.get("x"), number) and isinstance(state.get("closed"), bool) and \
        (state.get("total") is None or isinstance(state["total"], number)) and \
        type(state.get("pos")) is int and 0 <= state["pos"] < 1000 and \
        isinstance(state.get("unit"), str)


_reported = False


def _report_once(e):
    global _reported
    if not _reported:
        _reported = True
        _print("nanoray: tqdm_ray could not draw a bar (%s: %s)" % (type(e).__name__, e),
               file=sys.stderr)


def _write(stream, text):
    if stream is None:
        return
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            enc = getattr(stream, "encoding", None) or "utf-8"
            stream.write(text.encode(enc, "backslashreplace").decode(enc))
        stream.flush()
    except (OSError, ValueError):
        pass


def _start_time(pid):
    """A live process's start time (/proc), None once it has ended."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):               # exited, not yet reaped
        return None
    return fields[19]                         # starttime, the 22nd field
