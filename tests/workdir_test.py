"""Tests for catdog_jax.workdir: file names, configs of earlier versions,
which settings a relaunch may change."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from catdog_jax import fileio
from catdog_jax import train
from catdog_jax import workdir
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import metrics
from catdog_jax.evaluation import predict
from catdog_jax.evaluation import report
from tests import helpers
from tests.serving import export_test


def saved_and_new(**overrides):
  saved = helpers.tiny_config('/data').to_dict()
  new = helpers.tiny_config('/data', **overrides).to_dict()
  return saved, new


def test_logging_and_length_may_change():
  saved, new = saved_and_new(
    num_train_steps=99, log_every_steps=1, data__cache=True
  )
  assert workdir.config_changes(saved, new) == []


def test_a_run_of_an_earlier_cpu_config_resumes_with_calibration_on():
  # Its config.json lacks the field (off); today's CPU configs turn it on.
  saved, new = saved_and_new(eval__temperature_scaling=True)
  del saved['eval']['temperature_scaling']
  assert workdir.config_changes(saved, new) == []


def test_shape_or_meaning_may_not():
  saved, new = saved_and_new(
    data__image_size=24, model__conv_features=(4, 16), seed=3
  )
  assert workdir.config_changes(saved, new) == [
    'data.image_size 32 -> 24',
    'model.conv_features [4, 8] -> [4, 16]',
    'seed 0 -> 3',
  ]


def test_tuples_read_back_as_lists_and_earlier_nones_compare_equal():
  saved, new = saved_and_new()
  saved['model']['conv_features'] = [4, 8]  # As config.json holds it.
  saved['ema_decay'] = None  # Written before 0.0 meant "off".
  saved['only_in_an_older_version'] = 1
  assert workdir.config_changes(saved, new) == []


def test_check_same_run_names_the_change_before_anything_else(tmp_path):
  saved, new = saved_and_new(data__image_size=24)
  workdir.check_same_run(str(tmp_path), new)  # No config.json: a new run.
  fileio.write_json(workdir.path(str(tmp_path), workdir.CONFIG), saved)
  with pytest.raises(UsageError, match='data.image_size 32 -> 24.*--workdir'):
    workdir.check_same_run(str(tmp_path), new)


def test_an_older_config_gets_the_fields_added_since_and_keeps_its_model():
  saved = {
    'seed': 3,
    'model': {'name': 'resnet', 'widths': [4, 8]},
    'optimizer': {'name': 'sgd'},
  }
  upgraded = workdir.upgrade(saved)
  assert upgraded['seed'] == 3
  assert upgraded['model'] == {'name': 'resnet', 'widths': [4, 8]}
  assert upgraded['optimizer']['name'] == 'sgd'
  assert upgraded['optimizer']['lr_multipliers'] == []
  assert upgraded['optimizer']['freeze'] == ''
  assert upgraded['eval'] == {
    'flip': False,
    'translate': 0,
    'recalibrate_bn_batches': 0,
    'temperature_scaling': False,
  }


def test_renamed_fields_move_to_their_groups():
  saved = {
    'eval_flip': True,
    'eval_translate': 3,
    'recalibrate_bn_batches': 2,
    'freeze': '^a',
    'probe': True,
    'whiten_stem': True,
    'model': {'name': 'resnet'},
  }
  upgraded = workdir.upgrade(saved)
  assert upgraded['eval'] == {
    'flip': True,
    'translate': 3,
    'recalibrate_bn_batches': 2,
    'temperature_scaling': False,
  }
  assert upgraded['optimizer']['freeze'] == '^a'
  assert upgraded['probe']['enabled'] is True
  assert upgraded['model'] == {'name': 'resnet', 'whiten_stem': True}
  # A model that was never whitened does not gain the field.
  saved['whiten_stem'] = False
  assert 'whiten_stem' not in workdir.upgrade(saved)['model']


def test_a_relaunch_compares_old_names_with_new_ones():
  saved = helpers.tiny_config('/data').to_dict()
  saved['eval_flip'] = saved['eval'].pop('flip')
  new = helpers.tiny_config('/data').to_dict()
  assert workdir.config_changes(saved, new) == []
  new['eval']['flip'] = True
  assert workdir.config_changes(saved, new) == ['eval.flip False -> True']


# A tiny run written by the code before the restructure (commit 9942764):
# top-level eval_flip, eval_translate, whiten_stem and freeze; 20 steps,
# preempted after its checkpoint at step 10. Beside it, what that code
# predicted from checkpoint 10 and the test figures of its straight run.
TESTDATA = os.path.join(os.path.dirname(__file__), 'testdata')
OLD_WORKDIR = os.path.join(TESTDATA, 'workdir_9942764')


@pytest.fixture
def old_workdir(tmp_path):
  """The old workdir, with its data regenerated (the same bytes) and its
  config.json pointing there, as on the machine that wrote it."""
  data = helpers.write_dataset(tmp_path / 'data', 'flat', per_class=40)
  run_dir = str(tmp_path / 'workdir')
  shutil.copytree(OLD_WORKDIR, run_dir)
  config_path = workdir.path(run_dir, workdir.CONFIG)
  saved = fileio.read_json(config_path)
  saved['data']['root'] = data
  fileio.write_json(config_path, saved)
  return run_dir, data


@pytest.mark.slow  # Predicts, trains and reports on the old workdir.
def test_a_workdir_written_before_the_restructure_predicts_resumes_reports(
  old_workdir,
):
  run_dir, data = old_workdir
  # Predict gives the old code's probabilities (flip and shifted-copy TTA,
  # EMA weights and the whitened stem, through their renamed settings).
  with open(os.path.join(TESTDATA, 'old_code_predictions_at_10.csv')) as f:
    expected = {
      row['file']: float(row['prob_dog']) for row in csv.DictReader(f)
    }
  rows, skipped = predict.predict(run_dir, data)
  assert not skipped and len(rows) == len(expected)
  got = {os.path.basename(row['path']): row['prob_dog'] for row in rows}
  np.testing.assert_allclose(
    [got[name] for name in expected], list(expected.values()), atol=1e-5
  )
  # Relaunched with today's spelling of its settings, it resumes from step
  # 10 and ends as the old code's uninterrupted run did.
  config = helpers.tiny_recipe_config(
    data,
    num_train_steps=20,
    checkpoint_every_steps=10,
    eval_every_steps=10,
    model__whiten_stem=True,
    eval__translate=1,
  )
  assert int(train.train_and_evaluate(config, run_dir).step) == 20
  test = fileio.read_json(workdir.path(run_dir, workdir.EVAL_TEST))
  straight = fileio.read_json(
    os.path.join(TESTDATA, 'old_code_straight_eval_test.json')
  )
  # Recorded on an AVX-512 Xeon; another CPU sums in another order and ten
  # training steps carry that to ~1e-4 (8e-5 on an AMD EPYC without
  # AVX-512). Same-machine exactness is train_test's resume test.
  assert test['log_loss'] == pytest.approx(straight['log_loss'], rel=1e-3)
  assert predict.regenerate_report(run_dir).endswith(workdir.REPORT)


# Tiny finished runs (tiny_recipe_config: BatchNorm, an EMA, flip TTA; 20
# steps on flat_dataset's bytes) written by the code of two landed versions:
# 2026-11-25 (9942764) and 2026-11-29 (bb56aa9), with the files their runs
# ended with but the plots.
FINISHED = ['finished_9942764', 'finished_bb56aa9']


@pytest.fixture(params=FINISHED)
def finished_workdir(request, flat_dataset, tmp_path):
  run_dir = str(tmp_path / request.param)
  shutil.copytree(os.path.join(TESTDATA, request.param), run_dir)
  config_path = workdir.path(run_dir, workdir.CONFIG)
  saved = fileio.read_json(config_path)
  saved['data']['root'] = flat_dataset
  fileio.write_json(config_path, saved)
  return run_dir


@pytest.mark.slow  # Reports, exports and trains on each old workdir.
def test_a_finished_workdir_of_older_code_works_in_every_mode(
  finished_workdir, flat_dataset
):
  run_dir = finished_workdir
  # Report: the figures it lacks (the calibration error) derived from its
  # test predictions, not a KeyError.
  with open(predict.regenerate_report(run_dir)) as f:
    assert '- expected calibration error: 0.' in f.read()
  # Predict: the old code's test predictions, from today's code.
  keys, _, old_logits = report.read_predictions(run_dir)
  rows, skipped = predict.predict(
    run_dir, [os.path.join(flat_dataset, key) for key in keys]
  )
  assert not skipped
  np.testing.assert_allclose(
    [row['prob_dog'] for row in rows],
    metrics.sigmoid(old_logits[np.argsort(np.array(keys))]),
    atol=1e-5,
  )
  # Eval, and an export that predicts as predict does.
  result, _ = predict.evaluate_folder(run_dir, flat_dataset)
  assert result['num_examples'] == 80
  export_test.assert_exported_predicts_as_predict(run_dir, flat_dataset)
  # Resumed with its own settings for 10 more steps.
  config = predict.load_config(run_dir)
  config.num_train_steps = 30
  assert int(train.train_and_evaluate(config, run_dir).step) == 30
  assert (
    fileio.read_json(workdir.path(run_dir, workdir.EVAL_TEST))['step'] == 30
  )


HOLD_LOCK = """
import sys, time
from catdog_jax import workdir
lock = workdir.Lock(sys.argv[1])
lock.acquire()
print('held', flush=True)
time.sleep(120)
"""


def test_a_held_workdir_names_its_holder_and_a_dead_ones_is_taken_over(
  tmp_path, caplog
):
  holder = subprocess.Popen(
    [sys.executable, '-c', HOLD_LOCK, str(tmp_path)],
    cwd=helpers.REPO, stdout=subprocess.PIPE, text=True,
  )  # fmt: skip
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(UsageError) as error:
      workdir.Lock(str(tmp_path)).acquire()
    assert f'PID {holder.pid}, started ' in str(error.value)
    assert 'is in use by a run on host' in str(error.value)
  finally:
    holder.send_signal(signal.SIGKILL)  # Dies holding it: a stale lock.
    holder.wait()
  caplog.set_level('INFO')
  lock = workdir.Lock(str(tmp_path))
  lock.acquire()
  assert any('Taking over the workdir' in m for m in caplog.messages)
  lock.release()
  lock.acquire()  # Released: taken again, in the same process too.
  lock.release()


@pytest.mark.slow  # Two trainings at once.
def test_the_same_command_launched_twice_trains_once(flat_dataset, tmp_path):
  flags = helpers.tiny_flags(
    flat_dataset, num_train_steps=300, log_every_steps=50,
    checkpoint_every_steps=100, eval_every_steps=100,
  )  # fmt: skip
  command = [sys.executable, 'main.py', *flags, f'--workdir={tmp_path}']
  first = subprocess.Popen(command, cwd=helpers.REPO, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
  deadline = time.monotonic() + 120
  while (
    not (tmp_path / 'run.lock').exists()
    or not (tmp_path / 'run.lock').read_text()
  ):
    assert first.poll() is None and time.monotonic() < deadline
    time.sleep(0.1)
  # The first is held still while the second launches: however fast its
  # 300 steps run, it holds the lock when the second asks for it.
  first.send_signal(signal.SIGSTOP)
  try:
    second = subprocess.run(command, cwd=helpers.REPO, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
  finally:
    first.send_signal(signal.SIGCONT)
  _, first_log = first.communicate(timeout=300)
  assert first.returncode == 0, first_log[-2000:]
  assert second.returncode == 1
  last = second.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and f'PID {first.pid}' in last
  assert 'Traceback' not in second.stderr
  steps = [
    json.loads(line)['step']
    for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()
    if 'train_loss' in line
  ]
  assert steps == sorted(set(steps)) and steps[-1] == 300
  assert len(list(tmp_path.glob('events.out.tfevents.*'))) == 1
