"""sdgraph's graph engine: typed nodes, a graph model, validation, workflow files, an executor.

Standard library and networkx only — no torch, no Qt — so it imports in milliseconds and can be
tested with toy nodes.
"""

from .cache import LRUCache, estimate_nbytes
from .context import CancelToken, Environment, NodeContext, Paths
from .errors import GraphError, Interrupted, NodeInputError, UserError, WorkflowError
from .executor import Executor, RunResult
from .files import Folders
from .graph import Graph, GraphChange, NodeInstance
from .node import (
    ALWAYS_CHANGED,
    Bool,
    Choice,
    FileChoice,
    Float,
    Input,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    String,
)
from .registry import REGISTRY, Registry, register
from .types import SocketType, compatible, define_type
from .validate import Problem, validate
from .workflow import from_data, load_workflow, save_workflow, to_comfy_api, to_native

__all__ = [
    "ALWAYS_CHANGED", "Bool", "CancelToken", "Choice", "Environment", "Executor", "FileChoice", "Float", "Folders",
    "Graph", "GraphChange", "GraphError", "Input", "Int", "Interrupted", "LRUCache", "Link", "Node", "NodeContext",
    "NodeInputError", "NodeInstance", "NodeOutput", "Output", "Paths", "Problem", "REGISTRY", "Registry",
    "RunResult", "SocketType", "String", "UserError", "WorkflowError", "compatible", "define_type",
    "estimate_nbytes", "from_data", "load_workflow", "register", "save_workflow", "to_comfy_api", "to_native",
    "validate",
]
