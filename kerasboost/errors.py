"""Errors that the CLI turns into one-line messages.

`InputError` means the user gave us something wrong (a recipe, a flag, a data file): exit code 2.
`RunFailure` means a run could not go on (a full disk, a non-finite loss, a signal): its message is the
whole story, with its own exit code. Anything else that escapes is a runtime failure: exit code 1.
"""


class InputError(Exception):
    """Bad user input; the message is one line naming the file, key or line at fault."""


class RecipeError(InputError):
    """A recipe that cannot be loaded or does not match the schema."""


class DataError(InputError):
    """A data source that is missing, empty or unreadable."""


class RunFailure(Exception):
    """A run stopped for a reason the message states in one line (no traceback without --debug)."""

    exit_code = 1


class Preempted(RunFailure):
    """SIGTERM or SIGINT: the run checkpointed where it stopped and exits as the signal asks (143 / 130)."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number
