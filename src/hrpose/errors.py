"""The one error kind the command line turns into `error: <message>` (exit 2) instead of a traceback.

Anything raised for a user's mistake (a bad file, config key or value, missing weights, an unreadable image,
a refused checkpoint, a backend this machine cannot run) is a `UserError`: its message names the file/key,
says what was expected and how to fix it. Every other exception is our bug and keeps its traceback.
The module's error classes (`ConfigError`, `CheckpointError`, `AnnotationError`, ...) subclass it beside
their builtin base, so callers catching `ValueError`/`OSError`/`RuntimeError` keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave us; `str(e)` is the whole message (no traceback needed)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (a config, weights, an annotation file) does not exist.

    Also a ``FileNotFoundError``, so callers catching that keep working; the message names the file,
    the config key or option that pointed at it, and how to fix it.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the words the CLI prints before exiting 130: what was kept and how to resume.

    A command catches ``KeyboardInterrupt`` where it knows what it kept and re-raises this with that
    message; the CLI prints ``interrupted: <message>``.
    """

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message


class BackendUnavailableError(UserError, RuntimeError):
    """A backend this machine cannot run (fast and correctly); the message says what is missing and what to
    use instead."""


class DeviceError(UserError, ValueError):
    """A device this machine does not have, or a name that is no device (`--device`, `device=`)."""


class UnknownBackendError(UserError, ValueError):
    """A backend name that is not in the runtime's registry (`hrpose.runtime.REGISTRY`), nor "auto"."""
