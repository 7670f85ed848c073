"""The one exception type for input a command cannot use. Standard library only: every layer raises it."""


class InputError(ValueError):
    """A file, folder or row given to swehero has the wrong shape, or settings do not go together where only a run
    can tell (a model policy with no model to ask). The message names it (file:line and field where
    there are some) and says what is wrong; the command line prints it as `Error: ...` (exit 1), not a traceback."""


class MissingInput(InputError, FileNotFoundError):
    """A file or folder given to swehero lacks what it must hold (a model folder without its config, ...), or a
    dataset named is not where it can be read; still a FileNotFoundError for the callers that catch one."""
