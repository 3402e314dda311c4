"""The one exception type for problems with a user's input, shown by the CLI as one line with exit code 2."""


class ImpulsesError(Exception):
    """Bad input or an unusable file: the message names the file, column, id or option at fault.

    Library code raises it (or a subclass) for everything a user can fix; the CLI prints
    ``error: <message>`` on stderr and exits with code 2, without a traceback.
    """

    exit_code = 2


class StoreError(ImpulsesError):
    """An embedding store that is missing, malformed, incomplete or does not match a run."""


class LabelSetError(ImpulsesError):
    """A label set with unknown or duplicate ids, values outside {0, 1} or no labeled positive."""
