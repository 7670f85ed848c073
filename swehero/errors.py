"""The exception types the command line reports in one line, `Error: ...` (exit 1), not as a traceback: input a
command cannot use, something it needs from this machine that is not there, and a process it started for the
work that failed (whose own output says why). Standard library only: every layer raises them."""


class InputError(ValueError):
    """A file, folder or row given to swehero has the wrong shape, or settings do not go together where only a run
    can tell (a model policy with no model to ask). The message names it (file:line and field where there are
    some) and says what is wrong."""


class MissingInput(InputError, FileNotFoundError):
    """A file or folder given to swehero lacks what it must hold (a model folder without its config, ...), or a
    dataset named is not where it can be read; still a FileNotFoundError for the callers that catch one."""


class SettingError(InputError):
    """A stage setting a run cannot use, found by its stage kind's `check`; `field` is the setting's path in the
    stage's settings (`("repos", "zero", "revision")`), so that the recipe engine can say where the recipe sets it."""

    def __init__(self, field: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.field = field


class Unavailable(RuntimeError):
    """What a command needs from this machine is missing or unreachable (a Docker engine, bubblewrap, disk space, an
    x86_64 CPU for SWE-bench images). The message says what to do about it."""


class ProcessFailed(RuntimeError):
    """A process swehero started to do the work (a recipe's command, torchrun, a build) failed. The message says
    which, with its exit status or the end of its output; the traceback of the Python that waited would add nothing."""


def few(names: list[str], shown: int = 3, sep: str = ", ") -> str:
    """The first of a list that may be long, for an error's one line: `a, b, c and 7 more`."""
    return sep.join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
