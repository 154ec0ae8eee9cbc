"""The dashboard: init(include_dashboard=True) serves a live page.

A stdlib ThreadingHTTPServer on 127.0.0.1 only (Ray's port 8265, or any
free port when that one is taken; dashboard_port= picks one, 0 any), run
by a daemon thread of the driver and stopped by shutdown().  It answers
two GETs and nothing else:

  /               one self-contained page (inline CSS and JS, no network)
  /api/snapshot   JSON: workers, tasks by state, actors, store use, and
                  the task events of the last 30 s for the timeline

The page polls the snapshot every second, or less often when one takes
long (10x its cost between polls: with 10,000 tasks queued a snapshot
takes about 40 ms), and pages open at once share a snapshot up to 0.5 s
old.  A snapshot reads the same tables as nanoray.util.state and
nanoray.timeline() (each copied under the region's own lock, briefly);
this module takes no lock around it.

Also here: RayContext, what init() returns (dict and attribute access,
as Ray's), carrying dashboard_url ("127.0.0.1:PORT", as Ray gives it).
"""

import http.server
import json
import os
import sys
import threading
import time

DEFAULT_PORT = 8265      # Ray's
WINDOW_S = 30            # the timeline shows the last WINDOW_S seconds
MAX_EVENTS = 4000        # at most this many finished tasks drawn
MAX_ROWS = 200           # rows of each table sent to the page

_server = None           # the running ThreadingHTTPServer, or None
_thread = None
_pid = None              # the process that started it
_seen = {}               # task id -> when (monotonic ns) a snapshot first saw it running
_seen_lock = threading.Lock()
_cached = (0, None)      # (monotonic ns, JSON bytes) of the latest snapshot
SHARE_NS = 500 * 10**6   # requests within this much of a snapshot get it again


from nanoray._context import RayContext, context  # noqa: E402,F401  (moved)


def dashboard_url():
    s = _server
    return None if s is None or _pid != os.getpid() else "127.0.0.1:%d" % s.server_address[1]


def start(port=None, host=None):
    """Starts serving (once per runtime); returns the url.  port None tries
    8265, then any free port; an int asks for exactly that one (0: any)."""
    global _server, _thread, _pid
    if host not in (None, "127.0.0.1", "localhost"):
        raise ValueError("nanoray's dashboard listens on 127.0.0.1 only, not %r" % (host,))
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 <= port < 65536):
        raise ValueError("dashboard_port must be a port number, got %r" % (port,))
    if _server is not None and _pid == os.getpid():
        return dashboard_url()
    if port is None:
        try:
            server = _Server(("127.0.0.1", DEFAULT_PORT), _Handler)
        except OSError:                                # taken (another nanoray, or Ray)
            server = _Server(("127.0.0.1", 0), _Handler)
    else:
        server = _Server(("127.0.0.1", port), _Handler)
    _server, _pid = server, os.getpid()
    _thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                               name="nanoray-dashboard", daemon=True)
    _thread.start()
    url = dashboard_url()
    print("nanoray: dashboard at http://%s" % url, file=sys.stderr)
    return url


def stop():
    """Stops serving: the listening socket closes, and every request being
    answered finishes first (before the runtime it reads goes away)."""
    global _server, _thread, _pid, _cached
    server, thread, pid = _server, _thread, _pid
    _server = _thread = _pid = None
    _seen.clear()
    _cached = (0, None)
    if server is None:
        return
    if pid != os.getpid():                             # a forked child's copy: no thread here
        server.socket.close()
        return
    server.shutdown()                                  # serve_forever returns
    server.server_close()                              # closes the socket, joins handlers
    thread.join(timeout=5)


def _after_fork_in_child():
    # A forked child must not keep the parent's port open after the parent stops.
    s = _server
    if s is not None and _pid != os.getpid():
        s.socket.close()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False      # server_close() waits for the requests being answered
    block_on_close = True


def snapshot():
    """What the page shows, as one JSON-able dict ({"alive": False} once
    the runtime has stopped)."""
    from nanoray import _api
    from nanoray._core import _runtime as _rt
    from nanoray.util import state
    backend = _api._backend
    if backend is None:                    # never _get_backend(): that would start one
        return {"alive": False}
    now = time.monotonic_ns()
    stats = backend.region.stats()
    tasks = state.list_tasks(limit=None)
    workers = state.list_workers(limit=None)
    actors = state.list_actors(limit=None)
    events = [e for e in _rt.events(backend.region, MAX_EVENTS)
              if e[1] > now - WINDOW_S * 10**9]

    running = {t.task_id: t for t in tasks if t.state == "RUNNING"}
    with _seen_lock:                       # when each running task was first seen
        for tid in list(_seen):
            if tid not in running:
                del _seen[tid]
        for tid in running:
            _seen.setdefault(tid, now)
        since = dict(_seen)
    by_pid = {t.worker_pid: t.name for t in running.values() if t.worker_pid}

    counts = {}
    for t in tasks:
        counts[t.state] = counts.get(t.state, 0) + 1
    failed = sum(1 for e in events if e[8])
    counts["FINISHED"] = len(events) - failed       # in the timeline's window
    counts["FAILED"] = failed
    actor_counts = {}
    for a in actors:
        actor_counts[a.state] = actor_counts.get(a.state, 0) + 1

    def ago(ns):                           # seconds before now
        return round((now - ns) / 1e9, 4)
    out = {
        "alive": True, "pid": os.getpid(), "window_s": WINDOW_S,
        "cpus": {"total": stats["cpus_total"], "available": stats["cpus_available"]},
        "store": {k: stats[k] for k in ("store_capacity", "store_used", "objects",
                                        "spilled_objects", "spilled_bytes")},
        "workers": [{"pid": w.pid, "type": w.worker_type, "state": w.state,
                     "is_actor": w.is_actor, "task": by_pid.get(w.pid)}
                    for w in workers if w.is_alive][:MAX_ROWS],
        "tasks": {"total": len(tasks), "counts": counts,
                  "rows": [{"task_id": t.task_id, "name": t.name, "state": t.state,
                            "type": t.type, "worker_pid": t.worker_pid}
                           for t in sorted(tasks, key=lambda t: t.state != "RUNNING")
                           [:MAX_ROWS]]},
        "actors": {"total": len(actors), "counts": actor_counts,
                   "rows": [{"actor_id": a.actor_id, "class_name": a.class_name,
                             "name": a.name, "state": a.state, "pid": a.pid,
                             "num_restarts": a.num_restarts} for a in actors[:MAX_ROWS]]},
        # [pid, started (s ago), ended (s ago, null: still running), name, failed]
        "timeline": [[e[4], ago(e[0]), ago(e[1]), e[5], bool(e[8])] for e in events] +
                    [[t.worker_pid, ago(since[tid]), None, t.name, False]
                     for tid, t in running.items() if t.worker_pid],
    }
    out["cost_ms"] = round((time.monotonic_ns() - now) / 1e6, 1)
    return out


def _snapshot_json():
    """(status, content type, body) for /api/snapshot, shared by requests
    that come within SHARE_NS of each other."""
    global _cached
    taken, body = _cached
    if body is not None and time.monotonic_ns() - taken < SHARE_NS:
        return 200, "application/json", body
    try:
        body = json.dumps(snapshot()).encode()
    except Exception as e:                 # shown on the page, the server goes on
        return 500, "application/json", json.dumps(
            {"alive": True, "error": "%s: %s" % (type(e).__name__, e)}).encode()
    _cached = (time.monotonic_ns(), body)
    return 200, "application/json", body


class _Handler(http.server.BaseHTTPRequestHandler):
    # GET only: any other method gets 501 from the base class.
    timeout = 10                           # a stalled client cannot hold shutdown for long

    def do_GET(self):
        # DNS rebinding: a page of another site must not read ours through
        # a name it points at 127.0.0.1.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            return self._send(403, "text/plain", b"forbidden\n")
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(200, "text/html; charset=utf-8", PAGE.encode())
        if path == "/api/snapshot":
            return self._send(*_snapshot_json())
        return self._send(404, "text/plain", b"not found\n")

    def _send(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; connect-src 'self'")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):          # quiet: the driver's stderr is the user's
        pass


# The page: plain DOM built with textContent (task names are user text),
# a canvas for the timeline, one fetch a second.
PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>nanoray dashboard</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#222}
header{background:#1f2a44;color:#fff;padding:10px 18px;display:flex;gap:18px;
  align-items:baseline}
header h1{font-size:17px;margin:0}#status{opacity:.8}
main{padding:12px 18px;display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:12px}
section{background:#fff;border:1px solid #dde;border-radius:6px;padding:8px 12px;overflow:auto}
section.wide{grid-column:1/3}h2{font-size:14px;margin:2px 0 8px}
.cards{display:flex;gap:10px;flex-wrap:wrap}
.card{border:1px solid #e3e5ea;border-radius:5px;padding:4px 10px;min-width:90px}
.card b{display:block;font-size:18px}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:2px 8px;border-bottom:1px solid #eee;white-space:nowrap}
th{color:#667;font-weight:600}
.bar{height:14px;background:#e8eaf0;border-radius:3px;overflow:hidden;margin:6px 0}
.bar div{height:100%;background:#3b7dd8}
.RUNNING,.ALIVE{color:#127a3a;font-weight:600}.FAILED,.DEAD{color:#b42318}
.PENDING_ARGS_AVAIL,.PENDING_NODE_ASSIGNMENT,.PENDING_CREATION,.RESTARTING{color:#9a6700}
canvas{width:100%;display:block}.muted{color:#889}
</style></head><body>
<header><h1>nanoray dashboard</h1><span id="status">connecting...</span></header>
<main>
<section class="wide"><h2>Overview</h2><div class="cards" id="cards"></div>
<div id="storetext" class="muted"></div>
<div class="bar"><div id="storebar" style="width:0"></div></div></section>
<section class="wide"><h2>Timeline <span class="muted" id="tlnote"></span></h2>
<canvas id="tl" height="120"></canvas></section>
<section class="wide"><h2>Tasks <span class="muted" id="tasknote"></span></h2>
<table id="tasks"></table></section>
<section><h2>Workers</h2><table id="workers"></table></section>
<section><h2>Actors</h2><table id="actors"></table></section>
</main>
<script>
"use strict";
const $ = id => document.getElementById(id);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
// One table: a header row, then a row per record; the state cell gets its state as class.
function table(id, heads, rows, stateCol) {
  const head = el("tr");
  heads.forEach(h => head.appendChild(el("th", h)));
  const body = [head];
  rows.forEach(r => {
    const row = el("tr");
    r.forEach((v, i) => row.appendChild(el("td", v, i === stateCol ? v : "")));
    body.push(row);
  });
  if (!rows.length) {
    const row = el("tr");
    row.appendChild(el("td", "none", "muted"));
    body.push(row);
  }
  $(id).replaceChildren(...body);
}
function mib(n) { return (n / 1048576).toFixed(1) + " MiB"; }
function hue(s) { let h = 0; for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360; return h; }
function render(s) {
  const busy = s.cpus.total - s.cpus.available;
  const cards = [["workers", s.workers.length], ["CPUs busy", busy + " / " + s.cpus.total]];
  for (const k of ["RUNNING", "PENDING_NODE_ASSIGNMENT", "PENDING_ARGS_AVAIL"])
    cards.push([k, s.tasks.counts[k] || 0]);
  for (const k of ["FINISHED", "FAILED"])
    cards.push([k + " (last " + s.window_s + " s)", s.tasks.counts[k] || 0]);
  cards.push(["actors", s.actors.total], ["objects", s.store.objects]);
  $("cards").replaceChildren(...cards.map(([k, v]) => {
    const c = el("div", null, "card");
    c.appendChild(el("b", v));
    c.appendChild(el("span", k));
    return c;
  }));
  const st = s.store, pct = st.store_capacity ? 100 * st.store_used / st.store_capacity : 0;
  $("storetext").textContent = "object store: " + mib(st.store_used) + " of " +
    mib(st.store_capacity) + " (" + pct.toFixed(1) + "%)" + (st.spilled_objects ?
      ", " + st.spilled_objects + " spilled (" + mib(st.spilled_bytes) + ")" : "");
  $("storebar").style.width = Math.min(100, pct) + "%";
  $("tasknote").textContent = s.tasks.total + " pending or running";
  table("tasks", ["name", "state", "type", "worker pid", "task id"],
        s.tasks.rows.map(t => [t.name, t.state, t.type, t.worker_pid, t.task_id]), 1);
  table("workers", ["pid", "type", "state", "running task"],
        s.workers.map(w => [w.pid, w.is_actor ? "ACTOR" : w.type, w.state, w.task]), 2);
  table("actors", ["class", "name", "state", "pid", "restarts", "actor id"],
        s.actors.rows.map(a => [a.class_name, a.name, a.state, a.pid, a.num_restarts,
                                a.actor_id]), 2);
  drawTimeline(s);
}
// The last window_s seconds, a row per worker: finished tasks in light colors (red if
// failed), running ones dark, from when the dashboard first saw them running.
function drawTimeline(s) {
  const cv = $("tl"), W = s.window_s, pids = [], kind = {};
  s.workers.forEach(w => {
    if (w.type !== "DRIVER") pids.push(w.pid);
    kind[w.pid] = w.is_actor ? "actor " : "worker ";
  });
  s.timeline.forEach(e => { if (!pids.includes(e[0])) pids.push(e[0]); });
  const rowH = 18, left = 90, top = 16, h = top + Math.max(1, pids.length) * rowH + 4;
  const dpr = window.devicePixelRatio || 1, w = cv.clientWidth || 800;
  cv.width = w * dpr; cv.height = h * dpr; cv.style.height = h + "px";
  const g = cv.getContext("2d");
  g.scale(dpr, dpr); g.clearRect(0, 0, w, h);
  g.font = "11px system-ui,sans-serif"; g.textBaseline = "middle";
  const x = ago => left + (w - left - 4) * (1 - Math.min(ago, W) / W);
  for (let t = 0; t <= W; t += 5) {
    const xx = x(t);
    g.fillStyle = "#e3e5ea"; g.fillRect(xx, top - 3, 1, h - top);
    g.fillStyle = "#889"; g.fillText(t ? "-" + t + " s" : "now", Math.min(xx - 10, w - 26), 7);
  }
  g.fillStyle = "#445";
  pids.forEach((p, i) => g.fillText((kind[p] || "exited ") + p, 4, top + i * rowH + rowH / 2));
  s.timeline.forEach(([pid, start, end, name, failed]) => {
    const x0 = x(start), x1 = Math.max(x(end === null ? 0 : end), x0 + 1);
    const y = top + pids.indexOf(pid) * rowH + 2, bh = rowH - 4;
    g.fillStyle = failed ? "#d92d20" : "hsl(" + hue(name) + ",60%," +
      (end === null ? "38%)" : "62%)");
    g.fillRect(x0, y, x1 - x0, bh);
    if (x1 - x0 > 40) {
      g.save(); g.beginPath(); g.rect(x0, y, x1 - x0, bh); g.clip();
      g.fillStyle = "#fff";
      g.fillText(name + (end === null ? " (running)" : ""), x0 + 3, y + bh / 2);
      g.restore();
    }
  });
  $("tlnote").textContent = "last " + W + " s, one row per process; dark bars still run";
}
// Polls again a second after each answer, or 10x the snapshot's cost if that is longer.
async function poll() {
  let wait = 1000;
  try {
    const s = await (await fetch("/api/snapshot", {cache: "no-store"})).json();
    if (s.error) $("status").textContent = "error: " + s.error;
    else if (!s.alive) $("status").textContent = "nanoray has shut down";
    else {
      render(s);
      wait = Math.max(wait, 10 * s.cost_ms);
      $("status").textContent = "live: driver pid " + s.pid + ", updated " +
        new Date().toLocaleTimeString();
    }
  } catch (e) {
    $("status").textContent = "disconnected (" + e + ")";
  }
  setTimeout(poll, wait);
}
poll();
</script></body></html>
"""
