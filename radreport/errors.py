"""Bad input from a user, as one exception family, so every command reports it the same way.

A file, a config key, a command-line value, a model directory: whatever the user handed us that we
cannot use. The message names where (file, line, field or key); `radreport.cli.run` prints it as one
line, `error: ...`, and exits with status 2, before any work or writing has started.
"""

from __future__ import annotations


class InputError(ValueError):
    """Unusable input; the message names the file, line, field or key."""


EXIT_BAD_INPUT = 2
