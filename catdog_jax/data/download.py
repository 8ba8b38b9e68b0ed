"""Microsoft's PetImages archive, fetched once: resumable and verified.

With data.source='folder' and no data.root, the folder source reads the
PetImages folder of the archive that TFDS's cats_vs_dogs builder downloads
(its address and sha256 are data.download_url and data.download_sha256).
What lies in data.download_dir:

  petimages-<sha>.zip.partial   the bytes so far; resumed with HTTP Range
  petimages-<sha>.zip           complete and verified; deleted once unpacked
  petimages-<sha>/PetImages/    unpacked, renamed into place when whole
  .unpack-*/                    an unpacking in progress, or a killed one
  download.lock                 one download at a time on this machine

(<sha> is the first 12 hex digits of the expected sha256.) Every failure
raises DownloadError with one line that says what to do, and keeps what was
downloaded: a partial file resumes, a file of the wrong checksum is moved
aside under a name that says so.
"""

import contextlib
import errno
import fcntl
import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib

import ml_collections
import tqdm
from absl import logging

from catdog_jax import fileio
from catdog_jax.errors import CatdogError

# Where the archive goes when data.download_dir is not set.
DOWNLOAD_DIR_ENV = 'CATDOG_JAX_DATA'
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60  # For connecting, and for each read: a stalled server.
_MB = 1 << 20


class DownloadError(CatdogError):
  """The data could not be fetched; the message says what to do instead."""


def default_download_dir() -> str:
  """$CATDOG_JAX_DATA, else the project's cache directory."""
  if os.environ.get(DOWNLOAD_DIR_ENV):
    return os.environ[DOWNLOAD_DIR_ENV]
  return fileio.user_cache_dir()


def paths(config: ml_collections.ConfigDict) -> tuple[str, str, str]:
  """(download folder, verified archive, unpacked PetImages folder)."""
  directory = os.path.abspath(config.download_dir or default_download_dir())
  name = f'petimages-{config.download_sha256.lower()[:12]}'
  return (
    directory,
    os.path.join(directory, f'{name}.zip'),
    os.path.join(directory, name, 'PetImages'),
  )


def fetch_petimages(
  config: ml_collections.ConfigDict,
  process_index: int,
  poll_s: float = 5.0,
  wait_s: float = 4 * 3600.0,
) -> str:
  """The unpacked PetImages folder; downloads and unpacks it if not there.

  Process 0 fetches; the others wait for the folder to appear (the download
  folder must then be on a file system all processes share).

  Args:
    config: the data config (download_dir, download_url, download_sha256).
    process_index: this process's index among a multi-process run's.
    poll_s: how often a waiting process looks for the folder.
    wait_s: how long it waits before giving up.
  """
  directory, archive, root = paths(config)
  if os.path.isdir(root):
    return root
  if process_index != 0:
    return _wait_for(root, poll_s, wait_s)
  _make_folder(directory)
  with _exclusive_lock(os.path.join(directory, 'download.lock')):
    if not os.path.isdir(root):  # Else another run finished it meanwhile.
      if not os.path.exists(archive):
        _download(config.download_url, archive, config.download_sha256)
      _unpack(archive, root)
      os.remove(archive)  # The unpacked folder is the cache now.
  logging.info('PetImages is in %s.', root)
  return root


def _make_folder(directory: str) -> None:
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise DownloadError(
      f'cannot create data.download_dir {directory} ({e.strerror}): set '
      f'--config.data.download_dir or ${DOWNLOAD_DIR_ENV} to a writable folder'
    ) from e


def _wait_for(root: str, poll_s: float, wait_s: float) -> str:
  logging.info('Waiting for process 0 to fetch PetImages into %s.', root)
  deadline = time.monotonic() + wait_s
  while not os.path.isdir(root):
    if time.monotonic() > deadline:
      raise DownloadError(
        f'{root} did not appear within {wait_s / 60:.0f} min: process 0 '
        'fetches the data into a folder all processes must share; without '
        'a shared folder, pass --config.data.root=FOLDER on every host'
      )
    time.sleep(poll_s)
  return root


@contextlib.contextmanager
def _exclusive_lock(path: str):
  """An flock: a second run on this machine waits for the first's fetch."""
  with open(path, 'a') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info('Another run is fetching PetImages (%s); waiting.', path)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _get_by_hand(archive: str) -> str:
  return (
    f'download it yourself and save it as {archive} (it is checked and '
    'unpacked on the next run), or pass --config.data.root=FOLDER of cat '
    'and dog images'
  )


def _download(url: str, archive: str, sha256: str) -> None:
  """Fetches `url` into `archive`, resuming `archive`.partial; verifies it."""
  partial = archive + '.partial'
  have = os.path.getsize(partial) if os.path.exists(partial) else 0
  request = urllib.request.Request(url)
  if have:
    request.add_header('Range', f'bytes={have}-')
  try:
    response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
  except urllib.error.HTTPError as e:
    if e.code != 416 or not have:  # 416: the partial file is all there is.
      raise DownloadError(
        f'{url} answered HTTP {e.code} {e.reason}: {_get_by_hand(archive)}'
      ) from e
  except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
    reason = getattr(e, 'reason', None) or e
    raise DownloadError(
      f'cannot reach {url} ({reason}): {_get_by_hand(archive)}'
    ) from e
  else:
    with response:
      _receive(response, partial, have, url)
  _verify(partial, archive, sha256, url)


def _receive(response, partial: str, have: int, url: str) -> None:
  """Appends the response's body to `partial` (rewrites it on a 200)."""
  if response.status == 206:
    total = response.headers.get('Content-Range', '').rsplit('/', 1)[-1]
    total = int(total) if total.isdigit() else None
  else:
    have = 0  # The server ignored the Range header: start over.
    length = response.headers.get('Content-Length')
    total = int(length) if length else None
  directory = os.path.dirname(partial)
  if total is not None:
    # The rest of the archive, and room to unpack it beside it.
    needed, free = 2 * total - have, shutil.disk_usage(directory).free
    if free < needed:
      raise DownloadError(
        f'{directory} has {free // _MB} MB free; PetImages needs '
        f'{needed // _MB} MB (the archive and its unpacked copy): free some '
        'space or set --config.data.download_dir'
      )
  logging.info('Downloading %s (%s).', url, _size(total))
  bar = tqdm.tqdm(
    total=total,
    initial=have,
    unit='B',
    unit_scale=True,
    unit_divisor=1024,
    desc='PetImages',
    mininterval=1 if sys.stderr.isatty() else 30,
  )
  with bar, open(partial, 'ab' if have else 'wb') as f:
    while True:
      try:
        chunk = response.read(_CHUNK_BYTES)
      except (OSError, http.client.HTTPException) as e:
        raise _interrupted(partial, total, url, e) from e
      if not chunk:
        break
      try:
        f.write(chunk)
      except OSError as e:
        raise _write_error(partial, e) from e
      bar.update(len(chunk))
  if total is not None and os.path.getsize(partial) < total:
    raise _interrupted(partial, total, url, 'the connection closed early')


def _size(num_bytes: int | None) -> str:
  return 'size unknown' if num_bytes is None else f'{num_bytes / _MB:.1f} MB'


def _interrupted(partial: str, total, url: str, reason) -> DownloadError:
  return DownloadError(
    f'the download of {url} stopped at {_size(os.path.getsize(partial))} of '
    f'{_size(total)} ({reason}); {partial} is kept and the next run resumes it'
  )


def _write_error(partial: str, error: OSError) -> DownloadError:
  if error.errno == errno.ENOSPC:
    return DownloadError(
      f'the disk is full writing {partial}: it is kept; free some space (or '
      'set --config.data.download_dir) and rerun to resume'
    )
  return DownloadError(f'cannot write {partial}: {error.strerror or error}')


def _verify(partial: str, archive: str, sha256: str, url: str) -> None:
  """Renames a complete, matching `partial` to `archive`; else sets it aside."""
  actual = fileio.sha256(partial)
  if actual != sha256.lower():
    aside = f'{archive}.sha256-{actual[:12]}.rejected'
    os.replace(partial, aside)
    raise DownloadError(
      f'{url} gave a file of sha256 {actual}, not the expected {sha256}; '
      f'kept as {aside}. If the file is right (a mirror), pass '
      f'--config.data.download_sha256={actual}'
    )
  os.replace(partial, archive)


def _unpack(archive: str, root: str) -> None:
  """Unpacks into a temporary folder, renamed to root's parent when whole.

  A killed run leaves only a `.unpack-*` folder, which no run reads and the
  next fetch deletes.
  """
  directory = os.path.dirname(archive)
  for name in os.listdir(directory):
    if name.startswith('.unpack-'):  # Killed earlier; we hold the lock.
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  temp = tempfile.mkdtemp(prefix='.unpack-', dir=directory)
  logging.info('Unpacking %s.', archive)
  try:
    with zipfile.ZipFile(archive) as z:
      z.extractall(temp)  # Drops '..' and absolute parts of member names.
    if not os.path.isdir(os.path.join(temp, 'PetImages')):
      raise zipfile.BadZipFile('it holds no PetImages folder')
    os.rename(temp, os.path.dirname(root))
  except (zipfile.BadZipFile, zlib.error, EOFError) as e:
    aside = archive + '.corrupt'
    os.replace(archive, aside)
    raise DownloadError(
      f'{archive} matches its sha256 but does not unpack ({e}); kept as '
      f'{aside}: fix data.download_url and data.download_sha256'
    ) from e
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    raise DownloadError(
      f'the disk is full unpacking {archive} (it is kept): free some space '
      'or set --config.data.download_dir, and rerun'
    ) from e
  finally:
    shutil.rmtree(temp, ignore_errors=True)
