"""Reference executor of saved Core ML ML Programs (numpy/torch), for validation on Linux."""

from .executor import DEFAULT_OPS, MILExecutor, supported_ops
from .loader import MILProgram, read_mil_program

__all__ = ["DEFAULT_OPS", "MILExecutor", "MILProgram", "read_mil_program", "supported_ops"]
