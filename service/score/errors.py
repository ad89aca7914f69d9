"""The scorer's ways of stopping early; the command line turns each into its exit status."""


class UserError(Exception):
    """A problem with the command line or its inputs: reported as ``error: ...``, exit code 2."""


class StopRun(RuntimeError):
    """A failure no error row can stand for: the run stops (exit 1), the rows so far kept for --resume."""


class RemoteError(StopRun):
    """The service or the Ray cluster failed in a way retrying did not fix."""


class DecoderFailure(StopRun):
    """The decoder raised what no file explains (a TypeError, a KeyError: a bug, or a wrong argument). Written
    as an error row, it would be one for every file, in a run that ends 0 and that --resume takes as done."""
