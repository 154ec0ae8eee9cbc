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
