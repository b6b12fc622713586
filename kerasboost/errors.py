"""Errors that the CLI turns into one-line messages.

`InputError` means the user gave us something wrong (a recipe, a flag, a data file): exit code 2.
Anything else that escapes is a runtime failure: exit code 1.
"""


class InputError(Exception):
    """Bad user input; the message is one line naming the file, key or line at fault."""


class RecipeError(InputError):
    """A recipe that cannot be loaded or does not match the schema."""


class DataError(InputError):
    """A data source that is missing, empty or unreadable."""
