"""The one exception type whose message is shown to users as a single line (no traceback)."""


class ZcpError(Exception):
    """A problem with user input or user files: the CLI prints `zcp: error: <message>` and exits 2."""
