"""init(include_dashboard=True): a live page on 127.0.0.1, checked through
its JSON endpoint and end to end in headless Chromium (Debian's chromium
package; .ci/run installs it)."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib

import pytest

import nanoray
from conftest import wait_gone

T = 30
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def own_runtime():
    """Each test starts its own runtime (init's arguments are the subject);
    whatever it started is stopped at the end."""
    if nanoray.is_initialized():
        nanoray.shutdown()
    yield
    nanoray.shutdown()


def _get(url, host=None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=T) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _snapshot(ctx):
    return json.loads(_get("http://%s/api/snapshot" % ctx.dashboard_url)[2])


def _listening_sockets():
    """Inodes of the TCP sockets this process has listening."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":                      # TCP_LISTEN
                listening.add(fields[9])
    return mine & listening


def _port_closed(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _dashboard_threads():
    return [t for t in threading.enumerate() if t.name == "nanoray-dashboard"]


def test_dashboard_serves_snapshot_on_localhost_and_stops_with_shutdown(own_runtime):
    ctx = nanoray.init(num_cpus=2, object_store_memory=1 << 28, include_dashboard=True)
    url = ctx.dashboard_url
    assert url == ctx["dashboard_url"] == ctx.address_info["webui_url"]
    host, port = url.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0          # 8265, or a free one if taken
    assert ctx["num_cpus"] == ctx.num_cpus == 2
    assert nanoray._dashboard._server.server_address[0] == "127.0.0.1"
    assert len(_listening_sockets()) == 1

    @nanoray.remote
    def square(x):
        return x * x

    @nanoray.remote
    class Box:
        def get(self):
            return 1
    box = Box.remote()
    assert nanoray.get([square.remote(i) for i in range(4)] + [box.get.remote()],
                       timeout=T) == [0, 1, 4, 9, 1]
    kept = nanoray.put(b"x" * (1 << 20))
    snap = _snapshot(ctx)
    assert snap["alive"] is True and snap["pid"] == os.getpid()
    assert {"workers", "tasks", "actors", "store", "timeline", "cpus"} <= set(snap)
    assert any(w["type"] == "DRIVER" and w["pid"] == os.getpid() for w in snap["workers"])
    assert snap["tasks"]["counts"]["FINISHED"] >= 5
    assert [a["class_name"] for a in snap["actors"]["rows"]] == ["Box"]
    assert snap["store"]["store_capacity"] == 1 << 28
    assert snap["store"]["store_used"] >= 1 << 20 and snap["store"]["objects"] >= 1
    assert {e[3] for e in snap["timeline"]} >= {"square", "Box.get"}

    status, ctype, page = _get("http://%s/" % url)
    assert status == 200 and ctype.startswith("text/html") and b"/api/snapshot" in page
    # GET only, two paths only, and only for a Host of 127.0.0.1 or localhost.
    for method in ("POST", "PUT", "DELETE"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(
                "http://%s/api/snapshot" % url, data=b"", method=method), timeout=T)
        assert e.value.code == 501
    for path in ("/../../etc/passwd", "/api", "/src/nanoray/_api.py"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get("http://%s%s" % (url, path))
        assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        _get("http://%s/api/snapshot" % url, host="attacker.example:%s" % port)
    assert e.value.code == 403
    assert _get("http://%s/api/snapshot" % url, host="localhost:%s" % port)[0] == 200

    del kept
    nanoray.shutdown()
    assert _port_closed(int(port))
    assert _listening_sockets() == set() and _dashboard_threads() == []


def test_no_dashboard_unless_asked(own_runtime):
    ctx = nanoray.init(num_cpus=1, object_store_memory=1 << 26)
    assert ctx.dashboard_url is None and ctx["dashboard_url"] is None
    assert ctx["node_id"] == "local" and ctx.num_cpus == 1
    assert _listening_sockets() == set() and _dashboard_threads() == []
    nanoray.shutdown()
    # False starts nothing either; `with` shuts down at the block's end, as Ray's context.
    with nanoray.init(num_cpus=1, object_store_memory=1 << 26, include_dashboard=False) as ctx:
        assert ctx.dashboard_url is None and _listening_sockets() == set()
        assert nanoray.is_initialized()
    assert not nanoray.is_initialized()
    # Anything but 127.0.0.1 is refused, and the runtime does not stay half started.
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        nanoray.init(num_cpus=1, object_store_memory=1 << 26, include_dashboard=True,
                     dashboard_host="0.0.0.0")
    assert not nanoray.is_initialized() and _listening_sockets() == set()


def test_forked_child_does_not_keep_the_port_open(own_runtime):
    ctx = nanoray.init(num_cpus=1, object_store_memory=1 << 26, include_dashboard=True,
                       dashboard_port=0)
    port = int(ctx.dashboard_url.rsplit(":", 1)[1])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                       # the child: waits for the parent's word
        os.close(w)
        ok = nanoray._dashboard.dashboard_url() is None and _listening_sockets() == set()
        os.read(r, 1)
        os._exit(0 if ok else 1)
    os.close(r)
    try:
        nanoray.shutdown()
        assert _port_closed(port)                      # though the child still runs
    finally:
        os.write(w, b"x")
        os.close(w)
        assert os.waitpid(pid, 0)[1] == 0


def _chromium(tmp_path, *args):
    """Runs headless Chromium in a session of its own; returns its stdout.
    Whatever of that session outlives it is killed."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("%s is missing: the dashboard test needs Debian's chromium package "
                    "(apt-get install -y chromium; .ci/run installs it)" % CHROMIUM)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-breakpad", "--user-data-dir=%s" % (tmp_path / "profile"),
           "--virtual-time-budget=5000"] + list(args)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, start_new_session=True,
                         env=dict(os.environ, HOME=str(home)))
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("chromium took over 120 s: %s" % err.decode(errors="replace")[-2000:])
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)           # its helpers, if any are left
        except ProcessLookupError:
            pass
        assert wait_gone(_group(p.pid)) == []
    assert p.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def _group(pgid):
    """Pids in process group pgid."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[2]) == pgid:
                out.append(int(entry))
    return out


def _png_info(data):
    """(width, height, distinct byte values in the pixels) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    return width, height, len(set(zlib.decompress(idat)))


def _rows(dom):
    """The table rows the page's script drew: [[cell text, ...], ...]."""
    dom = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", dom, flags=re.S)]


def test_chromium_sees_a_running_task_on_the_page(own_runtime, tmp_path):
    ctx = nanoray.init(num_cpus=2, object_store_memory=1 << 28, include_dashboard=True,
                       dashboard_port=0)
    url = "http://%s/" % ctx.dashboard_url
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")

    @nanoray.remote
    def dashboard_probe_task(gate, started):
        open(started, "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.getpid()
    ref = dashboard_probe_task.remote(gate, started)
    deadline = time.monotonic() + T
    while not os.path.exists(started):
        assert time.monotonic() < deadline, "the probe task never started"
        time.sleep(0.01)
    assert b"dashboard_probe_task" not in _get(url)[2]   # only the page's script can show it

    rows = _rows(_chromium(tmp_path, "--dump-dom", url))
    task_rows = [r for r in rows if r[:2] == ["dashboard_probe_task", "RUNNING"]]
    assert len(task_rows) == 1, rows
    worker_pid = int(task_rows[0][3])
    assert [r for r in rows if r[:1] == [str(worker_pid)]] == \
        [[str(worker_pid), "WORKER", "RUNNING", "dashboard_probe_task"]], rows

    shot = tmp_path / "dash.png"
    _chromium(tmp_path, "--screenshot=%s" % shot, "--window-size=1280,900", url)
    data = shot.read_bytes()
    width, height, distinct = _png_info(data)
    assert (width, height) == (1280, 900) and len(data) > 15000 and distinct > 50, \
        (width, height, len(data), distinct)

    open(gate, "w").close()
    assert nanoray.get(ref, timeout=T) == worker_pid
    deadline = time.monotonic() + T
    while True:                                        # off the task table, onto the timeline
        snap = _snapshot(ctx)
        done = [e for e in snap["timeline"]
                if e[3] == "dashboard_probe_task" and e[2] is not None]
        if done and not snap["tasks"]["rows"]:
            break
        assert time.monotonic() < deadline, snap
        time.sleep(0.05)
    assert done[0][0] == worker_pid and done[0][4] is False
