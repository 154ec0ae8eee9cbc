"""A tree of matrix tasks whose refs feed each other.

Four create_matrix tasks make 1000x1000 normal matrices; two
multiply_matrices tasks take their refs; sum_matrices takes those two.
Only the root is fetched: every intermediate matrix moves between worker
processes through the shared object store, without being copied.

    python examples/matrix_tree.py
"""

import time

import numpy as np

import nanoray as ray


@ray.remote
def create_matrix(size, seed):
    return np.random.default_rng(seed).normal(size=size)


@ray.remote
def multiply_matrices(x, y):
    return np.dot(x, y)


@ray.remote
def sum_matrices(x, y):
    return np.add(x, y)


def main():
    ray.init()
    t0 = time.time()
    size = (1000, 1000)
    m1, m2, m3, m4 = (create_matrix.remote(size, seed) for seed in range(4))
    p1 = multiply_matrices.remote(m1, m2)
    p2 = multiply_matrices.remote(m3, m4)
    root = sum_matrices.remote(p1, p2)
    result = ray.get(root)
    elapsed = time.time() - t0

    rng = [np.random.default_rng(seed).normal(size=size) for seed in range(4)]
    expected = rng[0] @ rng[1] + rng[2] @ rng[3]
    assert np.allclose(result, expected)
    print("result %s, [0,0] = %.4f, matches numpy; %.2f s" % (result.shape, result[0, 0], elapsed))
    ray.shutdown()
    return result


if __name__ == "__main__":
    main()
