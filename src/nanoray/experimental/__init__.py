"""Ray's experimental APIs that nanoray has: tqdm_ray (progress bars in
tasks and actors, drawn by the driver).  Import the submodule itself:
``from nanoray.experimental.tqdm_ray import tqdm``."""
