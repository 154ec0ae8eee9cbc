"""``RayExecutor``: a concurrent.futures.Executor that runs calls as
nanoray tasks (see ray_executor.py)."""

from nanoray.util.concurrent.futures.ray_executor import RayExecutor

__all__ = ["RayExecutor"]
