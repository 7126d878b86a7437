"""Errors a user can act on: the CLI prints their message as one line, no traceback."""


class LettucifyError(Exception):
    """A problem with the user's input (data, config, checkpoint): say what and where."""


class DataError(LettucifyError):
    """The dataset is missing, malformed or could not be fetched."""


class CheckpointError(LettucifyError):
    """A checkpoint is missing, unreadable or does not fit the config."""
