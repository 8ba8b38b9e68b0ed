"""The error for a wrong setting or unusable data.

`main.py` turns it into one line on stderr and a non-zero exit, with no
traceback: it means the user has something to fix, not that the code failed.
"""


class UsageError(ValueError):
  """A setting or a data folder that cannot work, found before compiling."""
