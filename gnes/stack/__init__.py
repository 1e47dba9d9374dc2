"""Run a gnes Docker Swarm stack file as local processes (``gnes stack``), or expand it for inspection."""

from gnes.stack.compose import ProcessSpec, expand_stack, load_stack_file, service_order
from gnes.stack.interpolate import StackError, interpolate
from gnes.stack.local import LocalStack, StackStartError

__all__ = [
    "LocalStack",
    "ProcessSpec",
    "StackError",
    "StackStartError",
    "expand_stack",
    "interpolate",
    "load_stack_file",
    "service_order",
]
