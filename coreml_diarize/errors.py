"""User-facing errors: the CLI turns these into one line on stderr and a non-zero exit."""

from __future__ import annotations


class DiarizeError(Exception):
    """A problem the user can fix (bad path, bad checkpoint, bad option...).

    `exit_code` lets the CLI distinguish classes of failure; the message is one line.
    """

    exit_code = 2


class SourceError(DiarizeError):
    """Weights could not be loaded from the requested source."""

    exit_code = 3


class AudioError(DiarizeError):
    """An audio file cannot be used."""

    exit_code = 4


class ArtifactError(DiarizeError):
    """An mlpackage / bundle is missing, corrupt or of the wrong kind."""

    exit_code = 5


class ValidationFailed(DiarizeError):
    """An artifact does not match its PyTorch reference."""

    exit_code = 6


class UnsupportedOpError(DiarizeError):
    """The MIL reference executor met an op it does not implement."""

    exit_code = 7
