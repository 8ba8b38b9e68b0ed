"""Errors that end a run with one clear line instead of a traceback.

`main.py` prints them as `error: ...` and exits non-zero: each means the user
has something to fix or to know, not that the code failed.
"""


class CatdogError(Exception):
  """Base class: a run that cannot go on, for a reason the message states."""


class UsageError(CatdogError, ValueError):
  """A setting or a data source that cannot work, found before compiling."""


class DivergenceError(CatdogError, FloatingPointError):
  """A non-finite loss, gradient or parameter; names the step and value."""


class CheckpointError(CatdogError):
  """Checkpoints exist but none of them can be restored."""
