"""What workers print reaches the driver's terminal as Ray shows it: each
line prefixed with the task or actor that printed it and its pid; and
log_to_driver=False silences workers entirely."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    import nanoray as ray
    ray.init(num_cpus=2, log_to_driver=%s)

    @ray.remote
    def shout(i):
        print("line", i)
        print("warn", i, file=sys.stderr)
        print("part-", end="", flush=True)
        print("whole", flush=True)
        os.system("echo from-a-child-program")
        return os.getpid()

    @ray.remote
    class Counter:
        def hello(self):
            print("hello\\nsecond")
            return os.getpid()
    pids = ray.get([shout.remote(i) for i in range(3)])
    c = Counter.remote()
    apid = ray.get(c.hello.remote())
    print("PIDS", " ".join(map(str, pids)), apid)
    ray.shutdown()
""")


def run(log_to_driver):
    # The same nanoray the tests import (installed, or the source tree).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", SCRIPT % log_to_driver], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    *pids, apid = out.stdout.split("PIDS ")[1].split()
    return out.stdout, out.stderr, pids, apid


def test_worker_output_reaches_the_driver_with_rays_prefix():
    stdout, stderr, pids, apid = run(True)
    for i in range(3):
        assert re.search(r"^\(shout pid=(%s)\) line %d$" % ("|".join(pids), i), stdout, re.M), \
            stdout
        assert re.search(r"^\(shout pid=\d+\) warn %d$" % i, stderr, re.M), stderr
    assert len(re.findall(r"^\(shout pid=\d+\) part-whole$", stdout, re.M)) == 3, stdout
    assert "(Counter pid=%s) hello\n(Counter pid=%s) second\n" % (apid, apid) in stdout
    assert stdout.count("from-a-child-program") == 3        # C-level output still shows


def test_log_to_driver_false_silences_workers():
    stdout, stderr, pids, apid = run(False)
    assert stdout.startswith("PIDS "), stdout              # nothing from the workers
    assert "warn" not in stderr and "from-a-child-program" not in stdout + stderr


def test_partial_lines_odd_text_and_stream_methods_in_tasks():
    script = textwrap.dedent("""
        import sys, time
        import nanoray as ray
        ray.init(num_cpus=1)

        @ray.remote
        def partial():
            print("begun here", end="")
            return 1

        @ray.remote
        def other():
            print(" and ended")
            print("lone \\ud800 surrogate")
            sys.stdout.reconfigure(line_buffering=True)
            return sys.stdout.line_buffering

        ray.get(partial.remote())
        assert ray.get(other.remote()) is True
        ray.shutdown()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^\(partial pid=\d+\) begun here and ended$", out.stdout, re.M), out.stdout
    assert "lone \\ud800 surrogate" in out.stdout, out.stdout


# What both scripts below start with.
UNHANDLED_PRELUDE = textwrap.dedent("""
    import time
    import nanoray as ray
    from nanoray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(num_cpus=2)

    @ray.remote
    def bad(i):
        raise ValueError("boom %d" % i)

    @ray.remote
    def gen(x):
        yield x

    @ray.remote
    class Keeper:
        def keep(self, box):
            self.box = box

        def drop(self):
            self.box = None
""")

UNHANDLED = UNHANDLED_PRELUDE + textwrap.dedent("""
    @ray.remote
    def consume(x):
        return x

    @ray.remote
    def sleeper():
        time.sleep(30)

    @ray.remote
    def unpicklable():
        import threading
        return threading.Lock()

    bad.remote(1)                         # fire and forget: its worker reports it
    unpicklable.remote()                  # the same, for a result it could not store
    r = bad.remote(2)
    ray.wait([r])
    del r                                 # looked at with wait: not reported
    r = bad.remote(3)
    try:
        ray.get(r)
    except ValueError:
        pass
    del r                                 # got (it raised): not reported
    r = bad.remote(4)
    time.sleep(1.0)
    del r                                 # held, never fetched: reported (once)
    r = bad.remote(5)
    try:
        ray.get(consume.remote(r))        # its failure surfaced through the consumer
    except ValueError:
        pass
    del r
    s = sleeper.remote()
    time.sleep(0.5)
    ray.cancel(s)
    time.sleep(0.5)
    del s                                 # cancelled: not reported
    refs = [bad.remote(10), bad.remote(11)]
    box = ray.put(refs)
    for x in ray.get(box):                # other instances of the same refs
        try:
            ray.get(x)
        except ValueError:
            pass
    del box, x
    del refs                              # got through copies: not reported
    r = bad.remote(6)
    k = Keeper.remote()
    ray.get(k.keep.remote([r]))           # the actor holds a copy
    try:
        ray.get(r)
    except ValueError:
        pass
    del r
    ray.get(k.drop.remote())              # its copy goes last, in the actor: not reported
    r = bad.remote(8)
    ray.get(k.keep.remote([r]))
    try:
        ray.get(consume.remote(r))        # handed on through a task, and raised there
    except ValueError:
        pass
    del r
    ray.get(k.drop.remote())              # the actor's copy goes last: not reported
    gen.remote(bad.remote(7))             # a stream that failed before it ran: reported once

    @ray.remote(max_retries=0)
    def doomed(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(30)
    import os, signal, tempfile
    path = tempfile.mktemp()
    r = doomed.remote(path)
    del r                                 # dropped, then its worker dies: reported once
    while not (os.path.exists(path) and open(path).read()):
        time.sleep(0.01)
    os.kill(int(open(path).read()), signal.SIGKILL)
    os.remove(path)
    time.sleep(1.0)
    print("DONE", flush=True)
    ray.shutdown()
""")


UNHANDLED_STREAMS = UNHANDLED_PRELUDE + textwrap.dedent("""
    @ray.remote
    def mid(i):
        yield 1
        raise ValueError("boom %d" % i)

    for r in gen.remote(bad.remote(1)):   # read, and its failure handled: not reported
        try:
            ray.get(r)
        except ValueError:
            pass
    for r in mid.remote(2):               # the same, raised mid-stream
        try:
            ray.get(r)
        except ValueError:
            pass
    del r
    g = gen.remote(bad.remote(3))
    k = Keeper.remote()
    ray.get(k.keep.remote([g]))           # a copy of the stream in an actor
    for r in g:
        try:
            ray.get(r)
        except ValueError:
            pass
    del g, r
    time.sleep(0.5)
    ray.get(k.drop.remote())              # dropped last there: not reported
    items = list(mid.remote(4))           # its failed item never got: reported once
    del items
    g = mid.remote(6)                     # read up to its failure, which is
    ray.get(next(g))                      # never taken: reported once, at the drop
    ray.get(g.completed())
    del g

    @ray.remote
    def late(i):
        yield from range(3)
        raise ValueError("boom %d" % i)
    g = late.remote(9)                    # failed three items past where it was read
    ray.get(g.completed())
    del g                                 # reported once, at the drop
    far = NodeAffinitySchedulingStrategy(node_id="ab" * 28, soft=False)
    g = gen.options(scheduling_strategy=far).remote(5)
    del g                                 # could never run: reported once (not twice)
    time.sleep(1.0)
    print("DONE", flush=True)
    ray.shutdown()
""")


def run_unhandled(script=UNHANDLED, *args, **env):
    """Runs script (with args); it must print DONE.  Returns its stderr."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **env)
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0 and "DONE" in out.stdout, out.stderr
    return out.stderr


def test_a_failure_nobody_fetched_is_reported_once_as_in_ray():
    err = run_unhandled()
    assert err.count("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1')") == 5, err
    assert err.count("the result of unpicklable() could not be serialized") == 1, err
    assert err.count("The worker died unexpectedly while executing this task") == 1, err
    for i in (1, 4, 7):
        assert len(re.findall(r"ValueError: boom %d$" % i, err, re.M)) == 1, err
    for i in (2, 3, 5, 6, 8, 10, 11):
        assert "boom %d" % i not in err, err
    assert "Cancelled" not in err, err


def test_unhandled_failures_are_quiet_with_rays_switch():
    err = run_unhandled(RAY_IGNORE_UNHANDLED_ERRORS="1")
    assert "Unhandled error" not in err and "boom" not in err, err


def test_a_streams_failure_is_reported_once_and_not_when_read():
    err = run_unhandled(UNHANDLED_STREAMS)
    assert err.count("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1')") == 4, err
    for i in (4, 6, 9):
        assert len(re.findall(r"ValueError: boom %d$" % i, err, re.M)) == 1, err
    assert err.count("is unschedulable") == 1, err
    for i in (1, 2, 3):
        assert "boom %d" % i not in err, err


FAILED_AT_EXIT = textwrap.dedent("""
    import sys, time, nanoray as ray
    ray.init(num_cpus=1)

    @ray.remote(num_returns=2)
    def f():
        raise ValueError("boom at exit")

    @ray.remote
    class Store:
        def get(self):
            return 1

    @ray.remote
    class Loop:
        def run(self, store):
            while True:
                ray.get(store.get.remote())
    a, b = f.remote()                     # b: held by a global until the exit
    try:
        ray.get(a)
    except ValueError:
        pass
    s = Store.remote()
    Loop.remote().run.remote(s)           # cut short by the shutdown
    time.sleep(0.5)
    if sys.argv[1] == "shutdown":
        ray.shutdown()
    print("DONE", flush=True)
""")


@pytest.mark.parametrize("how", ["shutdown", "exit"])
def test_refs_still_held_at_the_exit_and_calls_the_shutdown_cuts_report_nothing(how):
    # As in Ray: a failure is reported when its last ref goes while the
    # runtime runs; not for refs the interpreter drops after the shutdown
    # (which could not even be read then), nor for calls the shutdown ends.
    err = run_unhandled(FAILED_AT_EXIT, how)
    assert "Unhandled error" not in err and "Traceback" not in err, err


LOGGING = textwrap.dedent("""
    import json, logging, sys
    import nanoray as ray
    try:
        ray.LoggingConfig(log_level="loud")       # refused at once, as Ray does
        raise AssertionError("a bad level was taken")
    except ValueError:
        pass
    ray.init(num_cpus=1, logging_config=ray.LoggingConfig(encoding=sys.argv[1],
                                                          log_level="INFO"))

    @ray.remote
    def f():
        logging.getLogger("user").info("from the task")
        logging.getLogger("user").debug("below the level")

    ray.get(f.remote())
    logging.getLogger("user").info("from the driver")
    ray.shutdown()
    logging.getLogger("user").info("after shutdown")
    assert not ray.is_initialized()               # a record starts no runtime
    print("DONE", flush=True)
""")


@pytest.mark.parametrize("encoding", ["TEXT", "JSON"])
def test_logging_config_sets_every_process_root_logger_as_ray_does(encoding):
    err = run_unhandled(LOGGING, encoding)
    lines = [line for line in err.splitlines() if "from the" in line or "after" in line]
    assert len(lines) == 3 and "below the level" not in err, err
    if encoding == "JSON":
        recs = [json.loads(line) for line in lines]
        task = next(r for r in recs if r["message"] == "from the task")
        assert task["levelname"] == "INFO" and task["task_name"] == "f" and task["job_id"]
        assert "task_id" not in next(r for r in recs if r["message"] == "from the driver")
    else:
        task = next(line for line in lines if "from the task" in line)
        assert "\tINFO " in task and " -- from the task" in task and "task_name=f" in task
        assert not task.startswith("(f pid=")       # records carry their ids, not a prefix
