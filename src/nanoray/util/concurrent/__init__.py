"""concurrent.futures on nanoray, under the path of Ray's RayExecutor
(``from nanoray.util.concurrent.futures import RayExecutor``)."""
