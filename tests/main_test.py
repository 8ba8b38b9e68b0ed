"""Tests that run main.py as a user would, in subprocesses."""

import os
import subprocess
import sys

import pytest

from tests import conftest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, env=None, timeout=300):
  return subprocess.run(
    [sys.executable, 'main.py', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    env={**os.environ, **(env or {})},
  )


def test_summary_shows_the_seed_table():
  result = run_main('--mode=summary', '--config=configs/base.py')
  assert result.returncode == 0, result.stderr
  assert '(None, 131072)' in result.stdout
  assert 'Total params: 16,880,961' in result.stdout


@pytest.mark.parametrize(
  'overrides, message',
  [
    ({'data__root': '/no/such/folder'}, "data.root '/no/such/folder' is not"),
    ({'batch_size': 0}, 'batch_size must be at least 1'),
    ({'data__image_size': 8}, 'image_size must be at least 16'),
    ({'data__image_size': -5}, 'image_size must be at least 16'),
    ({'model__name': 'vgg'}, 'known: seed_cnn'),
  ],
)
def test_bad_settings_stop_with_one_line(overrides, message, tmp_path):
  flags = conftest.tiny_flags(str(tmp_path), **overrides)
  result = run_main(*flags, f'--workdir={tmp_path / "w"}')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert message in result.stderr


def test_one_class_folder_stops_with_one_line(tmp_path):
  conftest.write_dataset(tmp_path / 'data', 'folders', per_class=5)
  for path in (tmp_path / 'data' / 'Dogs').iterdir():
    path.unlink()
  flags = conftest.tiny_flags(str(tmp_path / 'data'))
  result = run_main(*flags, f'--workdir={tmp_path / "w"}')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'error: ' in result.stderr and 'holds no dog images' in result.stderr


def test_batch_not_divisible_by_devices_stops(flat_dataset, tmp_path):
  flags = conftest.tiny_flags(flat_dataset, batch_size=3)
  result = run_main(
    *flags,
    f'--workdir={tmp_path}',
    env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'},
  )
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'batch_size 3 is not divisible by the 2 devices' in result.stderr
