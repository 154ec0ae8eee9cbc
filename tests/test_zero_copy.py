"""Large arrays are never copied on get: they are views of the shared store."""

import numpy as np

import nanoray


def test_get_of_512_mib_array_is_a_view_of_shared_memory(fresh):
    ray = fresh(num_cpus=2, object_store_memory=(512 << 20) + (64 << 20))
    a = np.arange((512 << 20) // 8, dtype=np.float64)
    ref = ray.put(a)
    del a
    got = ray.get(ref)
    assert got.nbytes == 512 << 20
    assert not got.flags.owndata and not got.flags.writeable
    base = got.base
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and base.readonly
    assert got[-1] == (512 << 20) // 8 - 1
    again = ray.get(ref)
    # Both gets view the same memory: nothing was copied.
    assert again.__array_interface__["data"][0] == got.__array_interface__["data"][0]

    @ray.remote
    def address_and_last(x):
        return x.flags.owndata, float(x[-1])
    assert ray.get(address_and_last.remote(ref)) == (False, float((512 << 20) // 8 - 1))


def test_get_writable_gives_private_copy_on_write_views(ray):
    import gc

    from conftest import store_objects
    before = store_objects()
    big = np.arange(1 << 20, dtype=np.float64)
    ref = ray.put({"a": big, "b": [big[:10].copy(), 7]})
    value = ray.get(ref, writable=True)
    a = value["a"]
    assert a.flags.writeable and not a.flags.owndata       # a view, not a copy
    a[0] = -1.0
    a[-1] += 1
    value["b"][0][:] = 5                                     # small arrays too
    assert (a[0], a[-1]) == (-1.0, float((1 << 20) - 1) + 1)
    # The stored object never changes: the driver's next get, and a task, see it as put.
    again = ray.get(ref)
    assert again["a"][0] == 0.0 and again["a"][-1] == float((1 << 20) - 1)
    assert not again["a"].flags.writeable

    @ray.remote
    def first(x):
        return float(x["a"][0]), float(x["b"][0][1])
    assert ray.get(first.remote(ref), timeout=30) == (0.0, 1.0)
    # Two writable gets are independent of each other.
    one, two = ray.get([ref, ref], writable=True)
    one["a"][1] = 100.0
    assert two["a"][1] == 1.0
    # The view keeps its object: dropping the ref does not free what it maps.
    del ref, again, one, two, value, first               # (first: its export)
    gc.collect()
    assert a[0] == -1.0 and a[5] == 5.0
    del a
    gc.collect()
    assert store_objects() == before


def test_tasks_may_take_writable_copy_on_write_arguments(ray):
    import pytest
    ref = ray.put(np.ones(1 << 18))

    @ray.remote(writable_args=True)
    def scale_in_place(x):
        x *= 3                                   # private to this call
        return float(x[1]), x.flags.owndata

    @ray.remote
    def write(x):
        x[0] = 2.0

    assert ray.get(scale_in_place.remote(ref), timeout=30) == (3.0, False)
    assert ray.get(ref)[1] == 1.0                            # the stored array is unchanged
    with pytest.raises(ValueError, match="read-only"):       # the default stays read-only
        ray.get(write.remote(ref), timeout=30)
    assert ray.get(write.options(writable_args=True).remote(ref), timeout=30) is None
    assert ray.get(ref)[0] == 1.0


def test_writable_args_covers_arrays_passed_by_value_too(ray):
    @ray.remote(writable_args=True)
    def bump(x, y=None):
        x.flat[0] += 5                           # private to this call
        if y is not None:
            y[-1] = -1.0
        return float(x.flat[0]), bool(x.flags.writeable), bool(x.flags.owndata)

    # Small (inline in the task), mid-sized and large (the call's own
    # argument object: a copy-on-write view of it, no copy).
    for n in (10, 13000, 1 << 18):
        a = np.ones(n)
        got = ray.get(bump.remote(a, y=np.zeros(n)), timeout=30)
        assert got[:2] == (6.0, True), n
        assert a[0] == 1.0
    assert ray.get(bump.remote(np.ones(1 << 18)), timeout=30)[2] is False
    t = np.arange(120000.0).reshape(300, 400)[:, 1::3].T    # strided, offset in its buffer
    assert ray.get(bump.remote(t), timeout=30)[:2] == (6.0, True)

    @ray.remote(writable_args=True)
    def same(x):
        return x.shape, x.strides == t.strides or x.flags.c_contiguous, x.tolist() == t.tolist()
    assert ray.get(same.remote(t), timeout=30) == (t.shape, True, True)
    assert ray.get(bump.map([np.ones(3), np.ones(1 << 17)])) == \
        [(6.0, True, True), (6.0, True, False)]


def test_get_writable_of_many_small_arrays_copies_them_instead_of_mapping_each(ray):
    # One private mapping each would use up the process's map count (65530).
    refs = [ray.put(np.full(2, i)) for i in range(70000)]
    got = ray.get(refs, writable=True)
    got[-1][0] = -5
    assert got[-1].tolist() == [-5, 69999] and got[123].tolist() == [123, 123]
    assert ray.get(refs[-1]).tolist() == [69999, 69999]


def test_a_write_to_a_read_only_argument_says_how_to_make_it_writable(ray):
    import pytest

    @ray.remote
    def write(x):
        x[0] = 2.0
    with pytest.raises(ValueError, match="writable_args=True"):
        ray.get(write.remote(np.ones(1 << 16)), timeout=30)


def test_an_uncaught_write_to_an_array_from_get_says_how_to_make_it_writable():
    import subprocess
    import sys
    script = ("import numpy as np, nanoray as ray\n"
              "ray.init(num_cpus=1)\n"
              "a = ray.get(ray.put(np.zeros(100000)))\n"
              "a[0] = 1\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert "assignment destination is read-only" in out.stderr
    assert "nanoray.get(ref, writable=True)" in out.stderr, out.stderr
