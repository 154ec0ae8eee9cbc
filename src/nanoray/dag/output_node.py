"""Where Ray's programs import MultiOutputNode from: ``from
nanoray.dag.output_node import MultiOutputNode`` (nanoray.dag's)."""

from nanoray.dag import MultiOutputNode

__all__ = ["MultiOutputNode"]
