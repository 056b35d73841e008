"""The suite's user-error types: the ``senet`` CLI prints these as one line; anything else is a bug
and keeps its traceback. This module imports nothing, so every layer (registries, SE blocks,
configs, data, the sweeps and the analysis) can raise them without import cycles."""


class UserError(Exception):
    """An error in what the user asked for (a key, a name, a value, a path); the CLI prints its
    message alone and exits with 2."""


class UserValueError(UserError, ValueError):
    """A bad value the user gave. Still a ValueError, so library callers that catch ValueError
    (and tests written against it) keep working."""
