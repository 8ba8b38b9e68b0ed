"""Tests that run main.py as a user would, in subprocesses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

pytestmark = pytest.mark.slow

REPO = helpers.REPO


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


def test_starting_imports_no_heavy_library_a_mode_may_not_need():
  """A bad setting's one line comes in seconds: tensorboardX (which imports
  PyTorch where it is installed) and scikit-learn wait until used."""
  heavy = ('torch', 'tensorboardX', 'sklearn')
  result = subprocess.run(
    [sys.executable, '-c',
     f'import sys, main; print([m for m in {heavy} if m in sys.modules])'],
    cwd=REPO, capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'


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
  flags = helpers.tiny_flags(str(tmp_path), **overrides)
  result = run_main(*flags, f'--workdir={tmp_path / "w"}')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert message in result.stderr


def test_one_class_folder_stops_with_one_line(tmp_path):
  helpers.write_dataset(tmp_path / 'data', 'folders', per_class=5)
  for path in (tmp_path / 'data' / 'Dogs').iterdir():
    path.unlink()
  flags = helpers.tiny_flags(str(tmp_path / 'data'))
  result = run_main(*flags, f'--workdir={tmp_path / "w"}')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'error: ' in result.stderr and 'holds no dog images' in result.stderr


def test_batch_not_divisible_by_devices_stops(flat_dataset, tmp_path):
  flags = helpers.tiny_flags(flat_dataset, batch_size=3)
  result = run_main(
    *flags,
    f'--workdir={tmp_path}',
    env=helpers.two_cpu_devices(),
  )
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'batch_size 3 is not divisible by the 2 devices' in result.stderr


def test_a_changed_config_stops_before_touching_checkpoints(
  flat_dataset, tmp_path, straight_log_loss
):
  flags = helpers.tiny_flags(flat_dataset, num_train_steps=20)
  first = run_main(*flags, f'--workdir={tmp_path}')
  assert first.returncode == 0, first.stderr[-3000:]
  checkpoints = sorted(os.listdir(tmp_path / 'checkpoints'))

  changed = helpers.tiny_flags(
    flat_dataset, num_train_steps=20, data__image_size=24
  )
  result = run_main(*changed, f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'data.image_size 32 -> 24' in last
  assert len(result.stderr.strip().splitlines()) < 10
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == checkpoints
  assert not os.path.exists(tmp_path / 'checkpoints_unrestorable')

  # Extending the run is a change it accepts: it resumes, and ends as a
  # run of 30 steps that was never stopped (the same settings, in-process).
  longer = helpers.tiny_flags(flat_dataset, num_train_steps=30)
  result = run_main(*longer, f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from checkpoint 20' in result.stderr
  resumed = json.loads((tmp_path / 'eval_test.json').read_text())['log_loss']
  assert resumed == pytest.approx(straight_log_loss, rel=1e-6)


def assert_one_error_line(result, message):
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr + result.stdout
  lines = result.stderr.strip().splitlines()
  assert len(lines) < 10, lines
  assert lines[-1].startswith('error: ') and message in lines[-1], lines[-5:]
  assert '\\n' not in lines[-1]  # No escaped newlines.


@pytest.mark.parametrize(
  'args, message',
  [
    (['--config=configs/no_such.py'], 'cannot load the --config file'),
    (
      ['--config=configs/base.py', '--config.num_train_step=5'],
      'Did you mean "num_train_steps"',
    ),
    (['--config.data.root=/x'], 'give --config=FILE first'),
  ],
)
def test_a_bad_command_line_is_one_line(args, message, tmp_path):
  result = run_main(*args, f'--workdir={tmp_path}')
  assert_one_error_line(result, message)
  assert len(result.stderr.strip().splitlines()) <= 3


@pytest.fixture(scope='module')
def trained_workdir(flat_dataset, tmp_path_factory):
  """A tiny trained workdir, trained by the CLI; its log is kept."""
  workdir = tmp_path_factory.mktemp('cli_trained')
  result = run_main(*helpers.tiny_flags(flat_dataset), f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result.stderr


def test_the_training_log_is_the_projects_own_lines(trained_workdir):
  _, log = trained_workdir
  assert 'Saving checkpoint 20.' in log and 'Test:' in log
  assert 'Compiled and timed: ' in log
  assert 'a progress line every 5 steps' in log
  assert 'step 20/20 (100%) | 32 px |' in log
  for noise in ('orbax', 'CheckpointManager', 'Unable to initialize backend'):
    assert noise not in log
  assert len(log.splitlines()) < 60


def test_eval_on_a_folder_without_labels_is_one_line(trained_workdir, tmp_path):
  workdir, _ = trained_workdir
  image = helpers.synthetic_image(0, np.random.default_rng(0))
  helpers.write_jpeg(str(tmp_path / 'photos' / 'a.jpg'), image)
  result = run_main('--mode=eval', f'--workdir={workdir}',
                    f'--images={tmp_path / "photos"}')  # fmt: skip
  assert_one_error_line(result, 'no labelled images in')


def test_eval_on_a_missing_folder_names_the_flag(trained_workdir, tmp_path):
  workdir, _ = trained_workdir
  result = run_main('--mode=eval', f'--workdir={workdir}',
                    f'--images={tmp_path / "nowhere"}')  # fmt: skip
  assert_one_error_line(result, "--images '")


def test_report_names_its_checkpoint_and_provenance(trained_workdir):
  workdir, _ = trained_workdir
  report = (workdir / 'report.md').read_text()
  assert '- Test figures, plots and Grad-CAM: the model after step 20' in report
  assert '(val accuracy' in report
  assert 'the checkpoint `--mode=predict` and `--mode=eval` use' in report
  assert '- Command: `python main.py --config=configs/base.py' in report
  assert 'Config: `configs/base.py`; overrides: `data.image_size=32`' in report
  assert '- Hardware: 1 x cpu' in report and 'JAX ' in report
  # --mode=report redraws the same section from what the workdir holds.
  (workdir / 'report.md').unlink()
  result = run_main('--mode=report', f'--workdir={workdir}')
  assert result.returncode == 0 and 'Traceback' not in result.stderr
  assert (workdir / 'report.md').read_text() == report


def test_a_second_command_reuses_the_compiled_programs(
  trained_workdir, flat_dataset, tmp_path
):
  workdir, _ = trained_workdir
  cache = tmp_path / 'cache'
  eval_flags = (
    '--mode=eval',
    f'--workdir={workdir}',
    f'--images={flat_dataset}',
  )
  # On, whatever this process was started with.
  env = {'CATDOG_JAX_CACHE': str(cache), 'CATDOG_JAX_COMPILATION_CACHE': '',
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}  # fmt: skip

  def run_eval(name, **extra_env):
    result = run_main(*eval_flags, f'--output={tmp_path / name}',
                      env={**env, **extra_env})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / name).read_text())

  def entries():
    return sorted(os.listdir(cache / 'xla')) if (cache / 'xla').exists() else []

  first = run_eval('first.json')
  compiled = entries()
  assert compiled
  # The same programs again: read from the cache, none added.
  assert run_eval('second.json') == first and entries() == compiled
  elsewhere = tmp_path / 'elsewhere'
  off = run_eval('off.json', CATDOG_JAX_CACHE=str(elsewhere),
                 CATDOG_JAX_COMPILATION_CACHE='off')  # fmt: skip
  assert off == first and not (elsewhere / 'xla').exists()
