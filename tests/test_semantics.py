"""Behaviours a Ray user relies on at the edges: exits, interrupts, stale
refs, writability, unrebuildable errors, tracebacks, call-site checks."""

import asyncio
import os
import sys
import time

import numpy as np
import pytest

from nanoray import exceptions

BIG = np.zeros(4)


def test_sys_exit_in_a_task_is_a_worker_crash_not_a_silent_driver_exit(ray):
    @ray.remote(max_retries=0)
    def leaves():
        sys.exit(3)
    with pytest.raises(exceptions.WorkerCrashedError, match="sys.exit"):
        ray.get(leaves.remote(), timeout=30)
    assert ray.get(ray.remote(lambda: "still running").remote(), timeout=30) == "still running"


def test_keyboard_interrupt_in_a_task_is_task_cancelled(ray):
    @ray.remote
    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(interrupted.remote(), timeout=30)


def test_arrays_captured_by_a_function_are_writable_copies_in_the_worker(ray):
    local = np.zeros(1 << 16)

    @ray.remote
    def mutate():
        local[0] += 1                              # a closure's array
        BIG[1] = 5                                 # a module global's array
        return float(local[0]), float(BIG[1])
    assert ray.get(mutate.remote()) == (1.0, 5.0)
    assert local[0] == 0 and BIG[1] == 0           # the driver's are untouched


def test_array_arguments_are_read_only_whatever_their_size(ray):
    @ray.remote
    def writable(a):
        return a.flags.writeable
    assert ray.get(writable.remote(np.ones(4))) is False
    assert ray.get(writable.remote(np.ones(1 << 20))) is False


class NeedsKeyword(Exception):
    def __init__(self, *, code):
        super().__init__("code %d" % code)
        self.code = code


def test_an_exception_that_cannot_be_rebuilt_keeps_its_traceback(ray):
    @ray.remote
    def raises():
        raise NeedsKeyword(code=7)
    with pytest.raises(exceptions.RayTaskError) as info:
        ray.get(raises.remote(), timeout=30)
    assert "NeedsKeyword" in str(info.value) and "code 7" in str(info.value)


def test_tracebacks_name_the_users_file_and_the_outer_task(ray):
    @ray.remote
    def inner():
        raise ValueError("deep problem")

    @ray.remote
    def outer():
        return ray.get(inner.remote())
    with pytest.raises(ValueError) as info:
        ray.get(outer.remote(), timeout=30)
    text = str(info.value)
    assert "outer" in text and "inner" in text and "deep problem" in text
    assert os.path.basename(__file__) in text          # not "<dynamic-code>"
    assert 'raise ValueError("deep problem")' in text  # the source line


def test_call_mistakes_raise_at_remote(ray):
    @ray.remote
    def two(a, b=1):
        return a + b
    with pytest.raises(TypeError, match="two"):
        two.remote()
    with pytest.raises(TypeError):
        two.remote(1, 2, 3)
    with pytest.raises(TypeError):
        two.remote(1, c=2)
    assert ray.get(two.remote(1, b=5)) == 6


def test_unpicklable_arguments_are_named_at_remote(ray):
    import threading

    @ray.remote
    def takes(x):
        return 1
    with pytest.raises(TypeError, match="arguments"):
        takes.remote(threading.Lock())


def test_unserializable_results_name_the_function(ray):
    @ray.remote
    def make_lock():
        import threading
        return threading.Lock()                    # cannot be pickled
    with pytest.raises(exceptions.RayTaskError, match="make_lock"):
        ray.get(make_lock.remote(), timeout=30)


def test_negative_get_timeout_waits_and_refs_can_be_awaited(ray):
    @ray.remote
    def later():
        time.sleep(0.2)
        return "done"
    assert ray.get(later.remote(), timeout=-1) == "done"

    async def main():
        return await later.remote()
    assert asyncio.run(main()) == "done"


def test_refs_and_views_kept_only_by_cyclic_garbage_give_their_objects_back(ray):
    import gc

    import numpy as np

    from conftest import store_objects
    before = store_objects()
    for _ in range(5):
        cycle = [ray.put(b"x" * 100)]
        cycle.append(cycle)
        view = ray.get(ray.put(np.ones(100_000)))      # a zero-copy view pins its object
        holder = {"view": view}
        holder["self"] = holder
        del cycle, view, holder
    gc.collect()
    assert store_objects() == before


def _same(a, b):
    """Equal, and of the same types all the way down (1 is not True, 0.0 is
    not -0.0, nan is nan)."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is float:
        return repr(a) == repr(b)
    return a == b


# Values at the edges of what is written without a Pickler (None, bools,
# 64-bit ints, floats, str and bytes up to 255 bytes, tuples nested 4 deep
# with up to 64 items) and just past them, where pickle takes over.
SIMPLE_EDGES = [
    None, True, False, 0, 1, -1, 2 ** 31 - 1, -2 ** 31, 2 ** 31, -2 ** 31 - 1, 2 ** 63 - 1,
    -2 ** 63, 2 ** 63, -2 ** 63 - 1, 0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"),
    5e-324, "", "a", "é" * 127, "é" * 128, "x" * 255, "x" * 256, "\U0001F600" * 63, "\ud800",
    "a\x00b", b"", b"\x00" * 255, b"x" * 256, (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4),
    tuple(range(64)), tuple(range(65)), ((((1,),),),), (((((1,),),),),), ((), ()),
    (None, (True, (1.5, ("s", b"b")))), tuple("x" * 60 for _ in range(10)),
]


def test_simple_values_keep_their_exact_types_through_put_args_and_returns(ray):
    @ray.remote
    def echo(*args):
        return args

    for v in SIMPLE_EDGES:
        assert _same(ray.get(ray.put(v)), v), repr(v)
        assert _same(ray.get(echo.remote(v), timeout=30), (v,)), repr(v)
        if type(v) is tuple:
            assert _same(ray.get(echo.remote(*v), timeout=30), v), repr(v)

    # One object twice in a value stays one object, as pickle's memo keeps
    # it (and Ray's put).
    s, inner = "shared", (1, "x")
    for v in [(s, s), (inner, inner), (b"b" * 3,) * 2]:
        got = ray.get(ray.put(v))
        assert got == v and got[0] is got[1]
        a, b = ray.get(echo.remote(*v), timeout=30)
        assert a is b


def test_remote_methods_copy_and_pickle_as_methods(ray):
    import copy
    import pickle

    @ray.remote
    class Counter:
        def get(self):
            return 2

    h = Counter.remote()
    for method in (h.get.remote, copy.copy(h.get.remote),
                   pickle.loads(pickle.dumps(h.get.remote))):
        assert method.__name__ == "remote"
        assert ray.get(method(), timeout=30) == 2
    f = ray.remote(_same)
    assert ray.get(copy.copy(f.remote)(1, 1), timeout=30) is True
    assert f.remote.__name__ == "remote"

    # Handed to a task, as a bound method or inside a closure.
    @ray.remote
    def call(submit, *args):
        return ray.get(submit(*args))

    assert ray.get(call.remote(f.remote, 2, 2), timeout=30) is True
    assert ray.get(call.remote(lambda *a: h.get.remote(*a)), timeout=30) == 2
    assert ray.get(call.remote(h.get.remote), timeout=30) == 2


def test_remote_checks_arguments_on_every_call_and_follows_shutdown(fresh):
    ray = fresh(num_cpus=1)

    @ray.remote
    def add(a, b=10):
        return a + b

    assert ray.get(add.remote(1)) == 11          # the first call: later ones take the C path
    assert ray.get(add.remote(1, 2)) == 3
    assert ray.get(add.remote(1, b=5)) == 6
    assert ray.get(add.remote(**{"a": 4})) == 14
    with pytest.raises(TypeError, match="add"):
        add.remote()
    with pytest.raises(TypeError, match="add"):
        add.remote(1, 2, 3)
    ray.shutdown()
    assert not ray.is_initialized()
    # A runtime starts on the call (as in Ray), and the function is exported
    # again, to it.
    assert ray.get(add.remote(2), timeout=30) == 12
    assert ray.is_initialized()
    ray.shutdown()
    ray.init(num_cpus=1)
    assert ray.get(add.remote(3), timeout=30) == 13


def test_a_call_cached_for_the_c_path_still_inherits_a_capturing_group(fresh):
    from nanoray import _runtime_env
    from nanoray.util.placement_group import placement_group
    ray = fresh(num_cpus=2)
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(10)

    @ray.remote
    def where():
        return ray.get_runtime_context().get_placement_group_id()

    assert ray.get(where.remote(), timeout=30) is None
    # What a worker does around a task of a capturing group: this process's
    # calls now inherit it, on the C path too.
    _runtime_env.set_current_pg((pg, True))
    try:
        ref = where.remote()
    finally:
        _runtime_env.set_current_pg(None)
    assert ray.get(ref, timeout=30) == pg.id.hex()
    assert ray.get(where.remote(), timeout=30) is None


def test_small_results_and_puts_take_one_small_block_each(fresh):
    # A task's spec block, freed by the worker and reused for its return,
    # is cut to the smallest size class: many small objects cost the store
    # 192 bytes each (64 of header; the class a plain task's spec takes,
    # csrc/nr_arena.c), not the 512 a spec with a larger argument takes.
    ray = fresh(num_cpus=2)
    region = ray._api._backend.region

    @ray.remote
    def f(i, pad=None):
        return i

    for make in (lambda i: f.remote(i), lambda i: f.remote(i, b"p" * 250), ray.put):
        warm = [make(i) for i in range(500)]
        ray.get(warm)
        del warm
        before = region.stats()["store_used"]
        kept = [make(i) for i in range(2000)]
        assert ray.get(kept) == list(range(2000))
        grown = region.stats()["store_used"] - before
        assert abs(grown - 2000 * 192) <= 4096, grown
        del kept


def test_dropped_small_values_are_not_left_in_the_store(fresh):
    # A small value's free may wait for the process's next section: what
    # the store reports never shows it.
    from conftest import store_objects
    ray = fresh(num_cpus=2)
    before = store_objects()
    refs = [ray.put(i) for i in range(100)]
    del refs
    assert ray._api._backend.region.stats()["objects"] == before
    refs = [ray.put(str(i)) for i in range(10)]
    ray.get(refs)
    refs = None
    assert store_objects() == before


def test_frees_a_process_put_off_are_done_when_it_exits_or_idles(fresh):
    import os
    import threading
    import time as _time
    from conftest import store_objects
    ray = fresh(num_cpus=1)

    @ray.remote
    class Holder:
        def hold(self, n):
            self.refs = [ray.put(i) for i in range(n)]

        def leave(self):
            self.refs = None               # put off in its ring...
            os._exit(0)                    # ...and gone, with exit code 0

    h = Holder.remote()
    ray.get(h.hold.remote(0), timeout=30)
    before = store_objects()               # the class's export and h's handle count
    ray.get(h.hold.remote(30), timeout=30)
    try:
        ray.get(h.leave.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        pass
    # The reap (or a flush) freed them: what is left is counted (its death
    # record and its last call's error, for h, which is still held).
    assert store_objects() - before <= 2
    assert all(o["refs"] > 0 for o in ray._api._backend.region.objects())
    assert ray._api._backend.region.verify()["zero_count_objects"] == 0

    @ray.remote
    def later(n):
        refs = [ray.put(i) for i in range(n)]
        threading.Thread(target=lambda: (_time.sleep(0.3), refs.clear())).start()

    ray.get(later.remote(0), timeout=30)
    _time.sleep(0.5)
    before = store_objects()               # with later's export
    ray.get(later.remote(20), timeout=30)
    _time.sleep(0.6)                       # the worker idles with them put off:
    assert store_objects() == before       # the driver's stats() frees them


def test_a_task_whose_exception_cannot_be_printed_fails_once(ray, tmp_path):
    import pytest
    runs = tmp_path / "runs"

    class BadStr(ValueError):
        def __str__(self):
            raise RuntimeError("no str")

    @ray.remote
    def raises(path):
        with open(path, "a") as f:
            f.write("x")
        raise BadStr()
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(raises.remote(str(runs)), timeout=30)
    assert runs.read_text() == "x"


def test_more_than_a_million_tasks_and_results_can_be_alive_at_once(ray):
    # A list comprehension of f.remote over a large input holds every result
    # at once: the tables hold four million tasks and objects.
    n = 1_100_000
    f = ray.remote(lambda x: x * x)
    refs = [f.remote(i) for i in range(n)]
    assert ray.get(refs, timeout=300) == [i * i for i in range(n)]
    mapped = f.map(range(n))
    assert len(refs) + len(mapped) > 2_000_000
    assert ray.get(mapped, timeout=300) == [i * i for i in range(n)]
    del refs, mapped
    assert ray.get(f.remote(3), timeout=30) == 9


def test_init_fits_smaller_tables_under_an_address_space_limit():
    # Under `ulimit -v` the region's four-million-entry tables may not map;
    # init falls back to smaller ones rather than failing.
    import resource
    import subprocess
    code = ("import nanoray as ray; ray.init(num_cpus=1, object_store_memory=1 << 30); "
            "print(ray.get(ray.remote(lambda: 6 * 7).remote(), timeout=60)); ray.shutdown()")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, preexec_fn=limit)
    assert out.returncode == 0 and out.stdout.split() == ["42"], out.stderr[-2000:]


def test_a_cancel_while_a_max_calls_worker_leaves_to_retry_elsewhere_is_a_cancel(fresh, tmp_path):
    # The worker that reached max_calls leaves for its retry to run in a fresh
    # one; a cancel() in that window (the zygote is paused so that it is wide)
    # must read back as a cancel, not as a crash with no retries left.
    import signal
    ray = fresh(num_cpus=1, object_store_memory=1 << 28)
    gate, pidf = str(tmp_path / "gate"), str(tmp_path / "pid")

    def raises_once_let(gate, pidf):
        with open(pidf, "w") as f:
            f.write(str(os.getpid()))
        while not os.path.exists(gate):
            time.sleep(0.01)
        raise ValueError("boom")
    ref = ray.remote(max_calls=1, max_retries=3, retry_exceptions=True)(raises_once_let).remote(
        gate, pidf)
    deadline = time.monotonic() + 30
    while not (os.path.exists(pidf) and open(pidf).read()) and time.monotonic() < deadline:
        time.sleep(0.01)
    worker = int(open(pidf).read())
    zygote = ray._api._backend.zygote.pid
    os.kill(zygote, signal.SIGSTOP)
    try:
        open(gate, "w").close()

        def state(pid):
            try:
                text = open("/proc/%d/stat" % pid).read()
                return text[text.rindex(")") + 2]
            except OSError:
                return "gone"
        while state(worker) not in ("Z", "gone") and time.monotonic() < deadline:
            time.sleep(0.01)
        ray.cancel(ref)
    finally:
        os.kill(zygote, signal.SIGCONT)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
