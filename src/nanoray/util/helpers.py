"""as_completed and map_unordered (Ray's ``ray.util`` helpers): results in
the order they finish, a batch of ``chunk_size`` at a time, with at most
``backpressure_size`` tasks in flight for map_unordered."""

__all__ = ["as_completed", "map_unordered"]


def _take(refs, chunk_size, yield_obj_refs, wait_kwargs):
    """Waits for up to chunk_size of refs: (their values or refs, the rest)."""
    from nanoray import _api
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    ready, rest = _api.wait(refs, num_returns=min(chunk_size, len(refs)), **wait_kwargs)
    return (ready if yield_obj_refs else _api.get(ready)), rest


def as_completed(refs, *, chunk_size=10, yield_obj_refs=False, **kwargs):
    """Yields the values of refs (the refs with yield_obj_refs) as they
    become ready, waiting for chunk_size of them at a time; other keyword
    arguments go to wait() (timeout, fetch_local).  A failed task raises
    its error when its turn comes."""
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    if "num_returns" in kwargs:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")
    refs = list(refs)
    while refs:
        done, refs = _take(refs, chunk_size, yield_obj_refs, kwargs)
        yield from done


def map_unordered(fn, items, *, backpressure_size=100, chunk_size=10, yield_obj_refs=False,
                  **kwargs):
    """fn.remote(item) for each item, yielding results as they finish; once
    backpressure_size tasks are in flight, waits for chunk_size of them
    before submitting more (None: no limit)."""
    if backpressure_size is None:
        backpressure_size = float("inf")
    elif backpressure_size <= 0:
        raise ValueError("backpressure_size must be positive.")
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    if "num_returns" in kwargs:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")
    refs = []
    for item in items:
        refs.append(fn.remote(item))
        if len(refs) >= backpressure_size:
            done, refs = _take(refs, chunk_size, yield_obj_refs, kwargs)
            yield from done
    yield from as_completed(refs, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)
