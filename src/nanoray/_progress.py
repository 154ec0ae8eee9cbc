"""Progress bars for a long get(), wait() or Pool map: get(refs, progress=True).

tqdm draws the bar when it is installed (tqdm.auto: a widget in Jupyter);
otherwise a plain one-line bar is redrawn on stderr, at most ten times a
second.  progress may also be a string: the bar's label."""

import sys
import threading
import time


class Bar:
    def __init__(self, total, desc):
        self.total = total
        self.done = 0
        self._closed = False
        self._lock = threading.Lock()
        self._desc = desc
        self._t0 = time.monotonic()
        self._drawn = 0.0
        # The plain bar redraws only on a terminal; elsewhere (a log, a
        # pipe) one line is written when it ends.
        self._live = sys.stderr is not None and sys.stderr.isatty()
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._tqdm = None
            if self._live:
                self._draw(force=True)
        else:
            self._tqdm = tqdm(total=total, desc=desc)

    def advance(self, n=1):
        self.set(self.done + n)

    def set(self, done):
        with self._lock:
            done = min(done, self.total)
            if self._closed or done <= self.done:
                return
            if self._tqdm is not None:
                self._tqdm.update(done - self.done)
            self.done = done
            if self._tqdm is None:
                self._draw()

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._tqdm is not None:
                self._tqdm.close()
            elif sys.stderr is not None:
                self._draw(force=True)
                sys.stderr.write("\n")
                sys.stderr.flush()

    def _draw(self, force=False):
        now = time.monotonic()
        if not force and (not self._live or now - self._drawn < 0.1) and \
                self.done < self.total:
            return
        self._drawn = now
        sys.stderr.write("\r" + plain_line(self._desc, self.done, self.total, now - self._t0))
        sys.stderr.flush()


def plain_line(desc, done, total, elapsed, unit="it"):
    """One bar as text, without tqdm: "desc:  40% [############..] 4/10 1.2s";
    with no total, the count alone ("desc: 4it 1.2s")."""
    if total is None:
        return "%s: %s%s %.1fs" % (desc, _count(done), unit or "it", elapsed)
    frac = min(1.0, done / total) if total else 1.0
    filled = int(frac * 30)
    return "%s: %3d%% [%s%s] %s/%s %.1fs" % (
        desc, frac * 100, "#" * filled, "." * (30 - filled), _count(done), _count(total),
        elapsed)


def _count(n):
    return "%d" % n if n == int(n) else "%.1f" % n


def label(progress, default):
    return progress if isinstance(progress, str) else default


def wait_with_bar(refs, num_returns, timeout, progress, wait):
    """wait() in short steps, drawing how many of num_returns are ready;
    returns the final wait()'s result."""
    bar = Bar(num_returns, label(progress, "wait"))
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = 0.1 if left is None else min(0.1, left)
            ready, _ = wait(refs, num_returns=num_returns, timeout=step)
            bar.set(len(ready))
            if len(ready) >= num_returns or (left is not None and left <= step):
                return wait(refs, num_returns=num_returns, timeout=0)
            # what is ready stays ready: count them all next time
            ready, _ = wait(refs, num_returns=len(refs), timeout=0)
            bar.set(min(len(ready), num_returns))
    finally:
        bar.close()
