"""Reference executor of saved Core ML ML Programs (numpy/torch), for validation on Linux."""

from .executor import DEFAULT_OPS, MILExecutor, OpTiming, supported_ops
from .loader import MILProgram, read_mil_program

__all__ = [
    "DEFAULT_OPS",
    "MILExecutor",
    "MILProgram",
    "OpTiming",
    "read_mil_program",
    "supported_ops",
]
