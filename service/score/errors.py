"""The scorer's two ways of stopping early; the command line turns each into its exit status."""


class UserError(Exception):
    """A problem with the command line or its inputs: reported as ``error: ...``, exit code 2."""


class RemoteError(RuntimeError):
    """The service or the Ray cluster failed in a way retrying did not fix: the run stops (exit 1) and can be
    resumed."""
