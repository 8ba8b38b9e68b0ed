"""Fetching PetImages, against an HTTP server on 127.0.0.1 (never the internet).

The server serves a small archive in PetImages layout built by the test, and
can drop the connection halfway, ignore Range headers or answer 404.
"""

import contextlib
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from catdog_jax import train
from catdog_jax.data import download
from catdog_jax.data import sources
from configs import base
from tests import helpers

REPO = helpers.REPO


def petimages_zip(per_class: int = 20) -> bytes:
  """A zip laid out as Microsoft's: PetImages/Cat|Dog/N.jpg, plus the extras
  the real one has (a Thumbs.db, an empty .jpg, a text file)."""
  rng = np.random.default_rng(0)
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as z:
    for label, name in enumerate(('Cat', 'Dog')):
      for i in range(per_class):
        image = helpers.synthetic_image(label, rng)
        ok, data = helpers.cv2.imencode('.jpg', image)
        assert ok
        z.writestr(f'PetImages/{name}/{i}.jpg', data.tobytes())
      z.writestr(f'PetImages/{name}/Thumbs.db', b'\0' * 64)
    z.writestr('PetImages/Cat/666.jpg', b'')
    z.writestr('readme[1].txt', b'Kaggle cats and dogs')
  return buffer.getvalue()


ARCHIVE = petimages_zip()
ARCHIVE_SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


class ArchiveServer(http.server.ThreadingHTTPServer):
  """Serves `payload` at /petimages.zip, honouring Range; records requests.

  drop_after: the next full response sends this many bytes of the body, then
  closes the connection. ignore_range: answer every request with the whole
  file (200), as some servers do.
  """

  def __init__(self, payload: bytes):
    super().__init__(('127.0.0.1', 0), _Handler)
    self.payload = payload
    self.ranges = []  # The Range header of each GET (None: none).
    self.drop_after = None
    self.ignore_range = False

  @property
  def url(self) -> str:
    return f'http://127.0.0.1:{self.server_address[1]}/petimages.zip'


class _Handler(http.server.BaseHTTPRequestHandler):
  def do_GET(self):  # noqa: N802 - the name http.server calls.
    server = self.server
    if self.path != '/petimages.zip':
      self.send_error(404)
      return
    requested = self.headers.get('Range')
    server.ranges.append(requested)
    start = 0
    if requested and not server.ignore_range:
      start = int(requested.removeprefix('bytes=').rstrip('-'))
    body = server.payload[start:]
    if start >= len(server.payload) and start:
      self.send_response(416)
      self.send_header('Content-Range', f'bytes */{len(server.payload)}')
      self.end_headers()
      return
    self.send_response(206 if start else 200)
    if start:
      self.send_header(
        'Content-Range',
        f'bytes {start}-{len(server.payload) - 1}/{len(server.payload)}',
      )
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    if server.drop_after is not None:
      body, server.drop_after = body[: server.drop_after], None
      self.wfile.write(body)
      self.wfile.flush()
      self.connection.shutdown(socket.SHUT_RDWR)
      self.close_connection = True
      return
    self.wfile.write(body)

  def log_message(self, *args):
    del args  # Quiet: pytest shows stderr of failing tests.


@contextlib.contextmanager
def serving(payload: bytes = ARCHIVE):
  server = ArchiveServer(payload)
  # Checks for shutdown every 10 ms (the default 0.5 s ended each test).
  thread = threading.Thread(
    target=server.serve_forever, args=(0.01,), daemon=True
  )
  thread.start()
  try:
    yield server
  finally:
    server.shutdown()
    server.server_close()


def data_config(server_url: str, download_dir, sha256: str = ARCHIVE_SHA256):
  """The base data config, fetching from `server_url` into `download_dir`."""
  config = base.get_config().data
  config.download_url = server_url
  config.download_sha256 = sha256
  config.download_dir = str(download_dir)
  return config


def leftovers(download_dir) -> list[str]:
  """What a fetch left beside the unpacked folder (and its lock)."""
  return sorted(
    name
    for name in os.listdir(download_dir)
    if name != 'download.lock'
    and not os.path.isdir(download_dir / name)
    or name.startswith('.unpack-')
  )


def test_base_config_fetches_what_tfds_fetches():
  """The default address and sha256 are TFDS cats_vs_dogs's own record."""
  import tensorflow_datasets as tfds

  record = os.path.join(
    os.path.dirname(tfds.__file__), 'url_checksums', 'cats_vs_dogs.txt'
  )
  with open(record) as f:
    url, size, sha256, _ = f.read().split()
  config = base.get_config().data
  assert (config.download_url, config.download_sha256) == (url, sha256)
  assert int(size) == 824_887_076


def test_default_download_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(download.DOWNLOAD_DIR_ENV, str(tmp_path / 'mine'))
  assert download.default_download_dir() == str(tmp_path / 'mine')
  monkeypatch.delenv(download.DOWNLOAD_DIR_ENV)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  assert download.default_download_dir() == str(tmp_path / 'cache/catdog_jax')


@pytest.mark.slow  # Trains for real.
def test_first_run_downloads_trains_and_a_second_downloads_nothing(
  tmp_path, capsys
):
  with serving() as server:
    config = helpers.tiny_config(None, num_train_steps=10)
    config.data.download_url = server.url
    config.data.download_sha256 = ARCHIVE_SHA256
    config.data.download_dir = str(tmp_path / 'data')
    train.train_and_evaluate(config, tmp_path / 'run')
    progress = capsys.readouterr().err
    assert server.ranges == [None]

    _, _, root = download.paths(config.data)
    with open(tmp_path / 'run' / 'data_report.json') as f:
      report = json.load(f)
    assert report['root'] == root
    assert report['num_used'] == 40
    # The empty .jpg is skipped with its reason; Thumbs.db is not an image.
    assert [s['path'] for s in report['skipped']] == ['Cat/666.jpg']
    assert os.path.exists(tmp_path / 'run' / 'eval_test.json')
    assert 'PetImages' in progress and '100%' in progress
    assert leftovers(tmp_path / 'data') == []  # The archive is deleted.

    assert sources.create_source(config.data).root == root
  # The server is gone: the verified copy is all a second run needs.
  assert sources.create_source(config.data).root == root


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path):
  config = data_config('', tmp_path)
  with serving() as server:
    config.download_url = server.url
    server.drop_after = len(ARCHIVE) // 2
    with pytest.raises(download.DownloadError) as error:
      download.fetch_petimages(config, process_index=0)
    partial = str(tmp_path / f'petimages-{ARCHIVE_SHA256[:12]}.zip.partial')
    assert str(error.value).endswith(f'{partial} is kept and the next run '
                                     'resumes it')  # fmt: skip
    assert '\n' not in str(error.value)
    assert os.path.getsize(partial) == len(ARCHIVE) // 2

    root = download.fetch_petimages(config, process_index=0)
  assert server.ranges == [None, f'bytes={len(ARCHIVE) // 2}-']
  assert sorted(os.listdir(os.path.join(root, 'Cat')))[:2] == ['0.jpg', '1.jpg']
  assert leftovers(tmp_path) == []


def test_a_server_that_ignores_range_restarts_the_file(tmp_path):
  with serving() as server:
    config = data_config(server.url, tmp_path)
    server.drop_after = 1000
    with pytest.raises(download.DownloadError):
      download.fetch_petimages(config, process_index=0)
    server.ignore_range = True
    root = download.fetch_petimages(config, process_index=0)
  assert server.ranges == [None, 'bytes=1000-']
  assert len(os.listdir(os.path.join(root, 'Dog'))) == 21  # And Thumbs.db.


def test_a_complete_partial_file_is_verified_not_downloaded_again(tmp_path):
  config = data_config('', tmp_path)
  with open(
    tmp_path / f'petimages-{ARCHIVE_SHA256[:12]}.zip.partial', 'wb'
  ) as f:
    f.write(ARCHIVE)
  with serving() as server:
    config.download_url = server.url
    download.fetch_petimages(config, process_index=0)
  assert server.ranges == [f'bytes={len(ARCHIVE)}-']  # Answered 416.


def test_a_wrong_checksum_is_refused_and_the_file_kept_aside(tmp_path):
  with serving() as server:
    config = data_config(server.url, tmp_path, sha256='ab' * 32)
    with pytest.raises(download.DownloadError, match='not the expected') as e:
      download.fetch_petimages(config, process_index=0)
  aside = (
    tmp_path
    / f'petimages-abababababab.zip.sha256-{ARCHIVE_SHA256[:12]}.rejected'
  )
  assert f'kept as {aside}' in str(e.value)
  assert f'download_sha256={ARCHIVE_SHA256}' in str(e.value)
  assert aside.read_bytes() == ARCHIVE
  assert leftovers(tmp_path) == [aside.name]  # Nothing unpacked.


def test_a_corrupt_zip_is_refused_and_nothing_is_unpacked(tmp_path):
  corrupt = bytearray(ARCHIVE)
  corrupt[len(corrupt) // 3 : len(corrupt) // 3 + 200] = b'\xff' * 200
  sha256 = hashlib.sha256(corrupt).hexdigest()
  with serving(bytes(corrupt)) as server:
    config = data_config(server.url, tmp_path, sha256=sha256)
    with pytest.raises(download.DownloadError, match='does not unpack'):
      download.fetch_petimages(config, process_index=0)
  assert leftovers(tmp_path) == [f'petimages-{sha256[:12]}.zip.corrupt']
  assert not os.path.exists(download.paths(config)[2])


def test_not_a_zip_at_all_is_refused(tmp_path):
  payload = b'<html>a captive portal</html>'
  sha256 = hashlib.sha256(payload).hexdigest()
  with serving(payload) as server:
    config = data_config(server.url, tmp_path, sha256=sha256)
    with pytest.raises(download.DownloadError, match='does not unpack'):
      download.fetch_petimages(config, process_index=0)


def test_no_network_says_what_to_download_and_a_copy_by_hand_works(tmp_path):
  with socket.socket() as s:  # A port nothing listens on.
    s.bind(('127.0.0.1', 0))
    url = f'http://127.0.0.1:{s.getsockname()[1]}/petimages.zip'
  config = data_config(url, tmp_path)
  with pytest.raises(download.DownloadError) as error:
    download.fetch_petimages(config, process_index=0)
  _, archive, root = download.paths(config)
  assert str(error.value).startswith(f'cannot reach {url} (')
  assert f'save it as {archive}' in str(error.value)
  assert '--config.data.root=' in str(error.value)

  with open(archive, 'wb') as f:  # What the message says to do.
    f.write(ARCHIVE)
  assert download.fetch_petimages(config, process_index=0) == root
  assert leftovers(tmp_path) == []


def test_http_errors_are_one_line(tmp_path):
  with serving() as server:
    config = data_config(server.url.replace('petimages', 'moved'), tmp_path)
    with pytest.raises(download.DownloadError, match='answered HTTP 404'):
      download.fetch_petimages(config, process_index=0)


def test_a_full_disk_is_refused_before_downloading(tmp_path, monkeypatch):
  # A mock: filling a real disk is not something a test can do here.
  monkeypatch.setattr(
    download.shutil,
    'disk_usage',
    lambda _: download.shutil._ntuple_diskusage(1, 1, 1000),
  )
  with serving() as server:
    config = data_config(server.url, tmp_path)
    with pytest.raises(
      download.DownloadError, match='MB free; PetImages needs'
    ):
      download.fetch_petimages(config, process_index=0)


def test_a_disk_that_fills_while_downloading_keeps_what_came_and_resumes(
  tmp_path, monkeypatch
):
  with helpers.small_disk(tmp_path / 'disk', 4) as disk, serving() as server:
    config = data_config(server.url, disk)
    filler = helpers.fill(disk, len(ARCHIVE) // 2)
    # Room at the check (another job fills the disk right after it): the
    # write itself then meets the real ENOSPC.
    roomy = download.shutil._ntuple_diskusage(1, 0, 1 << 40)
    monkeypatch.setattr(download.shutil, 'disk_usage', lambda _: roomy)
    with pytest.raises(download.DownloadError) as error:
      download.fetch_petimages(config, process_index=0)
    partial = os.path.join(disk, f'petimages-{ARCHIVE_SHA256[:12]}.zip.partial')
    assert str(error.value).startswith(
      f'the disk is full writing {partial}: it is kept'
    )
    kept = os.path.getsize(partial)
    assert 0 < kept < len(ARCHIVE)
    os.remove(filler)
    monkeypatch.undo()
    root = download.fetch_petimages(config, process_index=0)
    assert os.path.isdir(os.path.join(root, 'Cat'))
  assert server.ranges == [None, f'bytes={kept}-']  # Resumed.


def test_a_disk_too_full_to_unpack_keeps_the_archive(tmp_path):
  with helpers.small_disk(tmp_path / 'disk', 4) as disk:
    config = data_config('http://127.0.0.1:9/unused', disk)
    _, archive, root = download.paths(config)
    with open(archive, 'wb') as f:  # Saved by hand, as the error says.
      f.write(ARCHIVE)
    filler = helpers.fill(disk, 4096)
    with pytest.raises(download.DownloadError, match='the disk is full '
                       r'unpacking .*\.zip \(it is kept\)'):  # fmt: skip
      download.fetch_petimages(config, process_index=0)
    assert os.path.getsize(archive) == len(ARCHIVE)
    assert not os.path.exists(root)
    os.remove(filler)
    assert download.fetch_petimages(config, process_index=0) == root
    assert leftovers(tmp_path / 'disk') == []


def test_a_killed_unpacking_is_never_read_and_is_cleaned_up(tmp_path):
  config = data_config('', tmp_path)
  _, archive, root = download.paths(config)
  with open(archive, 'wb') as f:  # Verified, then the run was killed
    f.write(ARCHIVE)  # halfway through unpacking it:
  helpers.write_jpeg(
    str(tmp_path / '.unpack-killed' / 'PetImages' / 'Cat' / '0.jpg'),
    np.zeros((8, 8, 3), np.uint8),
  )
  assert download.fetch_petimages(config, process_index=0) == root
  assert not os.path.exists(tmp_path / '.unpack-killed')
  assert len(os.listdir(os.path.join(root, 'Cat'))) == 22


_FETCH = """
import sys
from catdog_jax.data import download
from configs import base
config = base.get_config().data
config.download_url, config.download_sha256, config.download_dir = sys.argv[1:4]
print(download.fetch_petimages(config, int(sys.argv[4]), poll_s=0.1))
"""


@pytest.mark.slow
def test_of_several_processes_only_one_downloads(tmp_path):
  """Processes 1 and 2 wait for process 0; a second run's process 0 (an
  independent run on the same machine) waits for the lock."""
  with serving() as server:
    launched = [
      subprocess.Popen(
        [
          sys.executable,
          '-c',
          _FETCH,
          server.url,
          ARCHIVE_SHA256,
          str(tmp_path),
          str(index),
        ],  # fmt: skip
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
      )
      for index in (1, 2, 0, 0)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in launched]
  assert [p.returncode for p in launched] == [0] * 4
  assert server.ranges == [None]
  assert set(outputs) == {download.paths(data_config('', tmp_path))[2]}


@pytest.mark.slow
def test_main_without_network_prints_one_line(tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    url = f'http://127.0.0.1:{s.getsockname()[1]}/petimages.zip'
  result = subprocess.run(
    [
      sys.executable,
      'main.py',
      '--mode=audit',
      '--config=configs/base.py',
      f'--workdir={tmp_path / "run"}',
      f'--config.data.download_url={url}',
      f'--config.data.download_dir={tmp_path / "data"}',
    ],  # fmt: skip
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 1
  assert result.stdout == ''
  assert 'Traceback' not in result.stderr
  assert result.stderr.splitlines()[-1].startswith(f'error: cannot reach {url}')
