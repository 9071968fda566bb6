"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input, a missing file or an unreachable hub: something the user can fix."""
