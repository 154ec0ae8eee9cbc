"""Where Ray's programs import the DAG's input from: ``from
nanoray.dag.input_node import InputNode`` (the names are nanoray.dag's)."""

from nanoray.dag import DAGInputData, InputAttributeNode, InputNode

__all__ = ["DAGInputData", "InputAttributeNode", "InputNode"]
