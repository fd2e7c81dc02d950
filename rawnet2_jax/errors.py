"""User-facing errors: one line that says what was wrong and what to do."""


class UserError(Exception):
    """Bad input from a user (file, checkpoint, config). CLIs print it on one line and exit 1."""


class ConfigError(UserError):
    """A config override (``--set FIELD=VALUE``) naming no field or giving a value it cannot take."""


class AudioError(UserError):
    """An audio file that cannot be used."""


class CheckpointError(UserError):
    """A checkpoint that cannot be converted or restored."""


class DataError(UserError):
    """A dataset tree or protocol that does not match what is expected."""


class TrainingError(UserError):
    """A training run that cannot continue (for example a non-finite loss)."""


def first_line(e: BaseException, *, sentence: bool = False) -> str:
    """The first line of an exception's message (its type name when the message is empty):
    what a one-line error quotes of a foreign exception. ``sentence``: of a line longer than
    120 characters only the first sentence (torch's errors explain at length)."""
    text = str(e).strip().splitlines()
    if not text:
        return type(e).__name__
    line = text[0]
    if sentence and len(line) > 120 and ". " in line:
        line = line.split(". ")[0]
    return line


def is_out_of_memory(e: BaseException) -> bool:
    """XLA's out of memory (a ``jax.errors.JaxRuntimeError`` saying ``RESOURCE_EXHAUSTED: Out of
    memory ...``), told by its text so that callers need not import jax; tensorstore's
    RESOURCE_EXHAUSTED for a full disk does not speak of memory."""
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text and "memory" in text.lower()

