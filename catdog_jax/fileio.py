"""Files written whole or not at all, JSON in and out, checksums, and a
full disk said in one line.

Every file the project writes for another process (or a relaunch) to read
goes through `atomic_write`: a reader sees the old file or the new one,
never half of one, whatever kills the writer or fills the disk.
"""

import contextlib
import errno
import hashlib
import json
import os
import threading
import uuid

from catdog_jax.errors import CatdogError
from catdog_jax.errors import UsageError

_CHUNK_BYTES = 1 << 20
_MB = 1 << 20
CACHE_ENV = 'CATDOG_JAX_CACHE'


def user_cache_dir() -> str:
  """$CATDOG_JAX_CACHE, else ~/.cache/catdog_jax (or under $XDG_CACHE_HOME):
  the built oneDNN library, compiled programs, downloads."""
  if os.environ.get(CACHE_ENV):
    return os.environ[CACHE_ENV]
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(
    os.path.expanduser('~'), '.cache'
  )
  return os.path.join(cache, 'catdog_jax')


class DiskFullError(CatdogError):
  """The disk filled up: what was being written, and what it needs."""


def free_bytes(path: str) -> int:
  """Free bytes on the file system holding `path` (or its nearest parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  stat = os.statvfs(path)
  return stat.f_bavail * stat.f_frsize


def is_disk_full(error: BaseException) -> bool:
  """ENOSPC, as Python, orbax or TensorStore report it."""
  for cause in (error, error.__cause__, error.__context__):
    if cause is None:
      continue
    if getattr(cause, 'errno', None) in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(cause)
    if 'No space left on device' in text or 'RESOURCE_EXHAUSTED' in text:
      return True
  return False


def disk_full(what: str, path: str, needed: int | None = None):
  """The DiskFullError for writing `what` at `path`."""
  need = f', about {needed / _MB:.1f} MB needed' if needed else ''
  return DiskFullError(
    f'the disk is full writing {what} ({os.path.dirname(os.path.abspath(path))}'
    f': {free_bytes(path) / _MB:.1f} MB free{need}): free some space and '
    'relaunch the same command; what was written before is intact'
  )


def check_space(path: str, needed: int, what: str) -> None:
  """Raises DiskFullError, before writing, unless `needed` bytes are free."""
  if free_bytes(path) < needed:
    raise disk_full(what, path, needed)


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
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(temporary)
    if is_disk_full(e):
      raise disk_full(os.path.basename(path), path) from e
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
