"""Files written whole or not at all, JSON in and out, and checksums.

Every file the project writes for another process (or a relaunch) to read
goes through `atomic_write`: a reader sees the old file or the new one,
never half of one, whatever kills the writer.
"""

import contextlib
import hashlib
import json
import os
import threading
import uuid

from catdog_jax.errors import UsageError

_CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w'):
  """A file object whose contents replace `path` only when the block ends.

  The contents go to a temporary file beside `path` (a name no other
  writer uses), renamed over `path` when the block finishes; on any error
  the temporary file is removed and `path` is left as it was.
  """
  temporary = (
    f'{path}.{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}.tmp'
  )
  try:
    with open(temporary, mode) as f:
      yield f
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temporary)
    raise


def write_json(path: str, value) -> None:
  """`value` as indented JSON, written atomically."""
  with atomic_write(path) as f:
    json.dump(value, f, indent=2)
    f.write('\n')


def read_json(path: str):
  """The JSON value in `path`.

  Raises:
    UsageError: naming the file, if it is not valid JSON (cut short, or
      edited by hand).
  """
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except ValueError as e:
    raise UsageError(
      f'{path} is not valid JSON ({e}): restore it, or delete it if the '
      'project can rebuild it'
    ) from e


def sha256(path: str) -> str:
  """The file's SHA-256, hex."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()
