"""Exception types the CLI maps to a one-line message and an exit code.

Library code raises these; only ``cli.main`` turns them into exit codes.
"""


class DeepclusterError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(DeepclusterError):
    """A bad option or option value (unknown method, k < 2, bad --set)."""

    exit_code = 2


class DataError(DeepclusterError):
    """An input file that cannot be read or is not valid feature data."""

    exit_code = 2


class ModelError(DeepclusterError):
    """A checkpoint that is corrupt, foreign, too new, or does not fit the data."""

    exit_code = 2


class TrainingError(DeepclusterError):
    """Training failed (loss became NaN/inf). The last good state is kept."""

    exit_code = 1


class Interrupted(DeepclusterError):
    """Training stopped by SIGINT (130) or SIGTERM (143) after saving a resumable state."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop (``cli.main`` installs the handler that raises it).
    Raised where the process is, like Ctrl-C's KeyboardInterrupt, so a half-written output's
    temporary file is removed on the way out; the CLI exits 143."""
