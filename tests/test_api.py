"""The task API with Ray's semantics: remote, get, put, wait, options, errors."""

import os
import threading
import time

import numpy as np
import pytest

import nanoray

from conftest import store_objects
from nanoray import exceptions


@nanoray.remote
def fib(n):
    """Recursive: each task submits two and waits for both inside a task."""
    if n < 2:
        return n
    return sum(nanoray.get([fib.remote(n - 1), fib.remote(n - 2)]))


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(a, b)
        self.a, self.b = a, b


def test_put_get_roundtrip_of_many_types(ray):
    local = type("Local", (), {"v": 3})        # only cloudpickle can carry it
    values = [0, -1, 2 ** 80, 1.5, "text", b"bytes", None, True, (1, "a"), [1, [2, [3]]],
              {"k": {"n": [1.0]}}, {1, 2}, Point(1, 2), np.arange(5), np.float32(2.5),
              np.array(["a", "bc"]), np.array([{"o": 1}], dtype=object)]
    for v in values:
        got = ray.get(ray.put(v))
        if isinstance(v, np.ndarray):
            assert got.dtype == v.dtype and (got == v).all()
        else:
            assert got == v and type(got) is type(v)
    assert ray.get(ray.put(local)).v == 3


def test_get_list_keeps_order_and_accepts_tuples(ray):
    @ray.remote
    def slow_echo(x, delay):
        time.sleep(delay)
        return x
    refs = [slow_echo.remote(i, 0.05 * (4 - i)) for i in range(5)]
    assert ray.get(refs) == [0, 1, 2, 3, 4]
    assert ray.get(tuple(refs[:2])) == [0, 1]
    assert ray.get([]) == []


def test_get_rejects_what_is_not_a_ref(ray):
    with pytest.raises(ValueError):
        ray.get(3)
    with pytest.raises(ValueError):
        ray.get([ray.put(1), "nope"])


def test_a_ref_rebuilt_from_its_binary_id_is_the_same_ref(ray):
    r = ray.put(42)
    assert r.binary().hex() == r.hex()
    r2 = ray.ObjectRef(bytes.fromhex(r.hex()))      # out of band, as Ray's docs show
    assert r2 == r and ray.get(r2) == 42
    del r                                           # the rebuilt ref keeps it alive
    assert ray.get(r2) == 42

    @ray.remote
    def slow():
        time.sleep(0.2)
        return 7
    p = slow.remote()
    assert ray.get(ray.ObjectRef(p.binary()), timeout=30) == 7   # pending when rebuilt
    gone = r2.binary()
    del r2
    with pytest.raises(exceptions.ObjectFreedError):
        ray.ObjectRef(gone)                         # an id nothing holds: said at once
    with pytest.raises(TypeError):
        ray.ObjectRef()


def test_put_of_a_ref_is_refused(ray):
    with pytest.raises(TypeError):
        ray.put(ray.put(1))


def test_calling_a_remote_function_directly_says_to_use_remote(ray):
    @ray.remote
    def f():
        return 1
    with pytest.raises(TypeError, match=r"f\.remote\(\)"):
        f()


def test_remote_decorator_forms_and_option_errors(ray):
    @ray.remote(num_cpus=1, max_retries=0)
    def f(x):
        return x * 2
    assert ray.get(f.remote(4)) == 8
    assert ray.get(f.options(num_cpus=0.5).remote(5)) == 10
    with pytest.raises(ValueError, match="Invalid option"):
        ray.remote(bogus=1)(lambda: 1)
    with pytest.raises(ValueError):
        f.options(num_returns=-1)
    with pytest.raises(ValueError, match="whole number"):
        ray.remote(num_gpus=1.5)(lambda: 1)
    with pytest.raises(ValueError, match="num_cpus"):
        ray.remote(resources={"CPU": 1})(lambda: 1)
    with pytest.raises(TypeError):
        ray.remote(1, 2)
    @ray.remote
    class Actor:
        pass
    assert isinstance(Actor, ray.ActorClass)
    with pytest.raises(TypeError, match="Actor.remote()"):
        Actor()
    with pytest.raises(ValueError, match="Invalid option"):
        ray.remote(max_retries=1)(type("Plain", (), {}))      # a task option on a class


def test_kwargs_and_refs_as_kwargs(ray):
    @ray.remote
    def f(a, b=0, *, c=0):
        return a + 10 * b + 100 * c
    assert ray.get(f.remote(1, c=ray.put(3), b=ray.put(2))) == 321


def test_num_returns(ray):
    @ray.remote(num_returns=3)
    def three():
        return 1, "two", [3]
    a, b, c = three.remote()
    assert ray.get([a, b, c]) == [1, "two", [3]]

    @ray.remote(num_returns=2)
    def wrong():
        return 1, 2, 3
    x, y = wrong.remote()
    with pytest.raises(ValueError, match="num_returns"):
        ray.get(x)

    @ray.remote(num_returns=0)
    def side_effect():
        return 1
    assert side_effect.remote() is None


def test_dag_refs_resolved_before_the_task_runs(ray):
    @ray.remote
    def make(n):
        time.sleep(0.05)
        return np.full((3, 3), n, dtype=float)

    @ray.remote
    def mul(a, b):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        return a @ b

    @ray.remote
    def add(a, b):
        return a + b
    m = [make.remote(i) for i in (1, 2, 3, 4)]
    root = add.remote(mul.remote(m[0], m[1]), mul.remote(m[2], m[3]))
    np.testing.assert_array_equal(ray.get(root), np.full((3, 3), 3 * 2 + 3 * 12, dtype=float))


def test_refs_nested_in_containers_arrive_as_refs(ray):
    inner = ray.put("inside")

    @ray.remote
    def look(box):
        ref = box["ref"]
        return type(ref).__name__, ray.get(ref)
    assert ray.get(look.remote({"ref": inner})) == ("ObjectRef", "inside")


def test_a_ref_inside_a_value_keeps_its_object_alive(ray):
    before = store_objects()
    inner = ray.put("kept")
    outer = ray.put([inner])
    del inner
    (ref,) = ray.get(outer)
    assert ray.get(ref) == "kept"
    del ref, outer
    assert store_objects() == before


def test_task_exception_is_instance_of_the_cause_with_remote_traceback(ray):
    @ray.remote
    def fails(x):
        raise KeyError("missing %s" % x)
    with pytest.raises(KeyError) as info:
        ray.get(fails.remote(7))
    err = info.value
    assert isinstance(err, exceptions.RayTaskError)
    assert "fails" in str(err) and "missing 7" in str(err)
    assert "Traceback" in str(err)
    assert isinstance(err.cause, KeyError)


def test_exception_with_custom_init_and_unpicklable_cause(ray):
    @ray.remote
    def custom():
        raise NeedsTwoArgs(1, 2)
    with pytest.raises(NeedsTwoArgs) as info:
        ray.get(custom.remote())
    assert (info.value.a, info.value.b) == (1, 2)

    @ray.remote
    def unpicklable():
        e = RuntimeError("holds a lock")
        e.lock = threading.Lock()
        raise e
    with pytest.raises(exceptions.RayTaskError, match="holds a lock"):
        ray.get(unpicklable.remote())


def test_errors_propagate_through_dependent_tasks(ray):
    @ray.remote
    def boom():
        raise ZeroDivisionError("root cause")

    ran = ray.put(False)

    @ray.remote
    def after(x, flag):
        return "should not run"
    with pytest.raises(ZeroDivisionError, match="root cause"):
        ray.get(after.remote(boom.remote(), ran))


def test_worker_survives_a_task_exception(ray):
    @ray.remote
    def fail():
        raise ValueError("x")
    with pytest.raises(ValueError) as info:
        ray.get(fail.remote())
    pid = info.value.pid
    assert pid in ray._api._backend.region.worker_pids()
    with open("/proc/%d/stat" % pid) as f:
        assert f.read().split(") ")[1][0] != "Z"


def test_get_timeout(ray):
    @ray.remote
    def sleepy():
        time.sleep(1.0)
        return 1
    ref = sleepy.remote()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.05)
    with pytest.raises(TimeoutError):        # GetTimeoutError is a TimeoutError
        ray.get([ref], timeout=0)
    assert ray.get(ref) == 1


def test_wait_semantics(ray):
    @ray.remote
    def after(x, delay):
        time.sleep(delay)
        return x
    slow, fast1, fast2 = after.remote("s", 1.0), after.remote("a", 0.0), after.remote("b", 0.0)
    ray.get([fast1, fast2])
    ready, not_ready = ray.wait([slow, fast1, fast2], num_returns=2)
    assert ready == [fast1, fast2] and not_ready == [slow]
    ready, not_ready = ray.wait([slow, fast2, fast1], num_returns=1)
    assert ready == [fast2] and not_ready == [slow, fast1]
    ready, not_ready = ray.wait([slow], timeout=0.01)
    assert ready == [] and not_ready == [slow]
    ready, _ = ray.wait([slow, fast1], num_returns=2, timeout=None)
    assert ready == [slow, fast1]
    assert ray.wait([]) == ([], [])
    with pytest.raises(ValueError):
        ray.wait([fast1, fast1])
    with pytest.raises(ValueError):
        ray.wait([fast1], num_returns=2)
    with pytest.raises(TypeError):
        ray.wait(fast1)


def test_nested_tasks_do_not_deadlock_on_two_cpus(ray):
    assert ray.get(fib.remote(8), timeout=60) == 21


def test_tasks_can_put_and_return_refs(ray):
    @ray.remote
    def producer():
        return ray.put(np.arange(4))

    @ray.remote
    def consumer(box):
        return int(ray.get(box[0]).sum())
    ref = ray.get(producer.remote())
    np.testing.assert_array_equal(ray.get(ref), np.arange(4))
    assert ray.get(consumer.remote([ref])) == 6


def test_num_cpus_is_honoured(ray):
    @ray.remote(num_cpus=2)
    def exclusive():
        t = time.monotonic()
        time.sleep(0.1)
        return t, time.monotonic()
    spans = sorted(ray.get([exclusive.remote() for _ in range(3)]))
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e0 <= s1, "two 2-CPU tasks overlapped on a 2-CPU runtime"

    @ray.remote(num_cpus=3)
    def too_big():
        return 1
    with pytest.warns(RuntimeWarning, match="cannot be scheduled"):
        pending = too_big.remote()                # infeasible: pending, as in Ray
    assert ray.wait([pending], timeout=0.2)[0] == []
    ray.cancel(pending)


def test_refcounting_frees_objects(ray):
    before = store_objects()
    refs = [ray.put(np.ones(1000)) for _ in range(50)]
    assert store_objects() == before + 50
    del refs
    assert store_objects() == before

    @ray.remote
    def ident(x):
        return x
    ray.get([ident.remote(i) for i in range(100)])
    assert store_objects() <= before + 1          # + the exported function


def test_memory_stays_bounded_when_putting_in_a_loop(ray):
    stats = ray._api._backend.region.stats
    block = np.ones(16 << 20 // 8)
    for _ in range(3):
        del_ref = ray.put(block)
        del del_ref
    touched = stats()["store_touched"]
    for _ in range(200):                          # 3.2 GiB in total through a 1 GiB store
        ref = ray.put(block)
        assert ray.get(ref)[0] == 1
        del ref
    assert stats()["store_touched"] == touched


def test_store_full_is_a_clear_error_and_the_store_stays_usable(ray):
    with pytest.raises(exceptions.ObjectStoreFullError, match="object_store_memory"):
        ray.put(np.zeros((1 << 30) // 8 + 1024))
    assert ray.get(ray.put("still fine")) == "still fine"


def test_get_of_an_array_is_a_read_only_view_of_shared_memory(ray):
    a = np.random.default_rng(0).normal(size=(500, 400))
    got = ray.get(ray.put(a))
    assert not got.flags.owndata and not got.flags.writeable
    np.testing.assert_array_equal(got, a)
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0] = 1.0
    writable = got.copy()
    writable[0, 0] = 1.0


def test_a_view_keeps_its_block_alive_after_the_ref_is_gone(ray):
    before = store_objects()
    ref = ray.put(np.arange(1_000_000))
    view = ray.get(ref)
    del ref
    assert store_objects() == before + 1          # pinned by the view
    assert view[-1] == 999_999 and view.sum() == 999_999 * 1_000_000 // 2
    del view
    assert store_objects() == before


def test_array_arguments_are_read_in_place_by_the_task(ray):
    @ray.remote
    def inspect(a):
        return a.flags.owndata, a.flags.writeable, float(a.sum())
    big = np.ones(1 << 20)
    assert ray.get(inspect.remote(ray.put(big))) == (False, False, float(1 << 20))
    assert ray.get(inspect.remote(big)) == (False, False, float(1 << 20))   # passed by value
    small = np.ones(8)
    owndata, writeable, total = ray.get(inspect.remote(small))
    assert total == 8.0                              # small values are copied inline


def test_results_that_cannot_be_pickled_fail_clearly(ray):
    @ray.remote
    def returns_lock():
        return threading.Lock()
    with pytest.raises(exceptions.RayTaskError, match="serialized") as info:
        ray.get(returns_lock.remote())
    assert isinstance(info.value, TypeError)         # the pickling error's type, as in Ray


def test_object_ref_basics(ray):
    a, b = ray.put(1), ray.put(1)
    assert a != b and a == a and len({a, b, a}) == 2
    assert len(a.hex()) == 16 and repr(a).startswith("ObjectRef(")
    with pytest.raises(TypeError):
        ray.ObjectRef()
    assert a.future().result(timeout=5) == 1


def test_resources(ray):
    total = ray.cluster_resources()
    assert total["CPU"] == 2.0 and total["object_store_memory"] == float(1 << 30)
    assert total["memory"] > 0 and total.get("GPU", 0) == ray._api._detect_gpus()
    assert 0 <= ray.available_resources()["CPU"] <= 2.0


def test_a_result_too_large_for_the_store_fails_the_task_instead_of_hanging(ray):
    @ray.remote
    def huge():
        return np.zeros((1 << 30) // 8 + 4096)
    with pytest.raises(exceptions.ObjectStoreFullError, match="object_store_memory=") as info:
        ray.get(huge.remote(), timeout=60)
    assert isinstance(info.value, exceptions.RayTaskError) and "huge" in str(info.value)


def test_threads_putting_refs_inside_values_concurrently(ray):
    before = store_objects()
    errors = []

    def work(seed):
        try:
            for i in range(200):
                inner = ray.put(seed * 1000 + i)
                outer = ray.put({"ref": inner, "pad": "x" * (i % 7)})
                del inner
                assert ray.get(ray.get(outer)["ref"]) == seed * 1000 + i
        except BaseException as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store_objects() == before


def test_a_forked_child_does_not_release_the_parents_objects(ray):
    ref = ray.put(np.arange(10))
    before = store_objects()
    pid = os.fork()
    if pid == 0:
        del ref                     # the inherited ref is inert in the child
        import gc
        gc.collect()
        os._exit(0)
    os.waitpid(pid, 0)
    assert store_objects() == before
    np.testing.assert_array_equal(ray.get(ref), np.arange(10))



def test_wait_on_many_refs(ray):
    @ray.remote
    def ident(i):
        return i
    refs = [ident.remote(i) for i in range(600)]          # past the 256-id fast path
    ready, not_ready = ray.wait(refs, num_returns=600, timeout=30)
    assert ready == refs and not_ready == []
    gate = ray.put(None)

    @ray.remote
    def slow(_):
        time.sleep(0.3)
        return 1
    pending = [slow.remote(gate)] + refs[:299]
    ready, not_ready = ray.wait(pending, num_returns=300, timeout=5)
    assert not_ready == [] and ready[0] is pending[0]


def test_nested_remote_functions_are_stored_once(ray):
    assert ray.get(fib.remote(6), timeout=60) == 8
    after_first = store_objects()
    for _ in range(3):
        assert ray.get(fib.remote(6), timeout=60) == 8
    assert store_objects() == after_first            # copies in workers reuse the export


def test_an_exception_whose_repr_fails_still_fails_the_task(ray):
    class BadRepr(Exception):
        def __repr__(self):
            raise RuntimeError("no repr")

    @ray.remote
    def raises():
        raise BadRepr("x")
    with pytest.raises(exceptions.RayTaskError):
        ray.get(raises.remote(), timeout=30)
