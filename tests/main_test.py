"""Tests that run main.py as a user would, in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import conftest

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


def read_log_loss(workdir):
  with open(os.path.join(workdir, 'eval_test.json')) as f:
    return json.load(f)['log_loss']


def test_sigterm_then_relaunch_ends_like_a_straight_run(flat_dataset, tmp_path):
  flags = conftest.tiny_flags(
    flat_dataset,
    num_train_steps=1500,
    checkpoint_every_steps=50,
    eval_every_steps=1000,
    log_every_steps=100,
  )
  stopped = str(tmp_path / 'stopped')
  process = subprocess.Popen(
    [sys.executable, 'main.py', *flags, f'--workdir={stopped}'],
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  first_checkpoint = os.path.join(stopped, 'checkpoints', '50')
  deadline = time.monotonic() + 240
  while not os.path.exists(first_checkpoint):
    assert process.poll() is None, process.stderr.read()
    assert time.monotonic() < deadline, 'no checkpoint within 240 s'
    time.sleep(0.02)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr
  steps = sorted(
    int(s) for s in os.listdir(os.path.join(stopped, 'checkpoints'))
  )
  assert 50 < steps[-1] < 1500, f'SIGTERM came too late: {steps}'
  assert not os.path.exists(os.path.join(stopped, 'eval_test.json'))

  relaunched = run_main(*flags, f'--workdir={stopped}')
  assert relaunched.returncode == 0, relaunched.stderr
  assert f'Resuming from checkpoint {steps[-1]}' in relaunched.stderr

  straight = str(tmp_path / 'straight')
  result = run_main(*flags, f'--workdir={straight}')
  assert result.returncode == 0, result.stderr
  assert read_log_loss(stopped) == pytest.approx(
    read_log_loss(straight), rel=1e-5, abs=1e-7
  )
