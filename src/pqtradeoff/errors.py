"""The one exception type users see: a one-line message naming the field and the value."""


class PQError(ValueError):
    """Bad input or an impossible request. The CLI prints `error: <message>` and exits with code 2."""
