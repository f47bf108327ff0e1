"""The one exception type for user mistakes: the CLI prints its message on one line, exits 2."""


class UserError(Exception):
    """Bad input from the user. The message says what is wrong and how to fix it."""
