"""Errors a user can act on: printed as their message alone, one line, no traceback."""

from hydra.errors import CompactHydraException


class LettucifyError(CompactHydraException):
    """A problem with the user's input (data, config, checkpoint, workspace): say what and where.

    The CLI's task prints it itself; where one escapes to Hydra (a launcher's error, or a
    sweep point's that Hydra's sweeper raises), Hydra prints a CompactHydraException's
    message without a stack trace.
    """


class DataError(LettucifyError):
    """The dataset is missing, malformed or could not be fetched."""


class CheckpointError(LettucifyError):
    """A checkpoint is missing, unreadable or does not fit the config."""


class ConfigError(LettucifyError):
    """A config key is unknown, or a value is outside what its field allows."""
