"""A joblib backend on nanoray, as Ray's ray.util.joblib:

    from nanoray.util.joblib import register_ray
    register_ray()
    with joblib.parallel_backend("nanoray"):      # or "ray"
        joblib.Parallel(n_jobs=-1)(joblib.delayed(f)(x) for x in xs)

so joblib, and scikit-learn's n_jobs, run on nanoray.  joblib batches the
calls as it does for its own pools; each batch runs on a
nanoray.util.multiprocessing.Pool process, its arguments and results going
through the shared store.  joblib is optional: this module needs it only
when register_ray() is called.
"""

__all__ = ["register_ray"]


def register_ray():
    """Registers the backend with joblib as "nanoray" and "ray"."""
    try:
        import joblib
    except ImportError:
        raise ImportError("nanoray.util.joblib needs joblib: pip install joblib") from None
    from nanoray.util.joblib.backend import NanorayBackend
    joblib.register_parallel_backend("nanoray", NanorayBackend)
    joblib.register_parallel_backend("ray", NanorayBackend)
