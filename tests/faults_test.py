"""Faults: SIGTERM, SIGKILL, torn checkpoints, divergence.

The kill tests run main.py as a real process and kill it after its first
checkpoint; relaunching must end with exactly the model of a straight run.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from catdog_jax import checkpointing
from catdog_jax import fileio
from catdog_jax import mesh
from catdog_jax import metric_writers
from catdog_jax import probe
from catdog_jax import state as state_lib
from catdog_jax import train
from catdog_jax import workdir
from catdog_jax.data import input_pipeline
from catdog_jax.errors import CheckpointError
from catdog_jax.errors import DivergenceError
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import predict
from catdog_jax.fileio import DiskFullError
from tests import helpers

REPO = helpers.REPO
LONG_RUN = {
  'num_train_steps': 600,
  'checkpoint_every_steps': 50,
  'eval_every_steps': 1000,
  'log_every_steps': 100,
}


def run_main(flags, workdir, timeout=300):
  return subprocess.run(
    [sys.executable, 'main.py', *flags, f'--workdir={workdir}'],
    cwd=REPO, capture_output=True, text=True, timeout=timeout,
  )  # fmt: skip


def read_json(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


@pytest.fixture(scope='session')
def long_straight_log_loss(flat_dataset, shared):
  """Test log-loss of the long run, never interrupted (run once for every
  worker: the kill tests run on both)."""

  def train(workdir):
    result = run_main(helpers.tiny_flags(flat_dataset, **LONG_RUN), workdir)
    assert result.returncode == 0, result.stderr[-3000:]

  return read_json(shared('long_straight', train), 'eval_test.json')['log_loss']


def start_and_kill_after_first_checkpoint(flags, workdir, sig):
  process = subprocess.Popen(
    [sys.executable, 'main.py', *flags, f'--workdir={workdir}'],
    cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  first_checkpoint = os.path.join(workdir, 'checkpoints', '50')
  deadline = time.monotonic() + 240
  while not os.path.exists(first_checkpoint):
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.monotonic() < deadline, 'no checkpoint within 240 s'
    time.sleep(0.02)
  process.send_signal(sig)
  _, stderr = process.communicate(timeout=120)
  return process.returncode, stderr


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_kill_then_relaunch_ends_like_a_straight_run(
  sig, flat_dataset, tmp_path, long_straight_log_loss
):
  flags = helpers.tiny_flags(flat_dataset, **LONG_RUN)
  returncode, stderr = start_and_kill_after_first_checkpoint(
    flags, str(tmp_path), sig
  )
  checkpoints = os.path.join(tmp_path, 'checkpoints')
  steps = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())
  if sig == signal.SIGKILL:
    assert returncode == -signal.SIGKILL
  else:  # SIGTERM and Ctrl-C save where they stopped and exit cleanly.
    assert returncode == 0, stderr[-3000:]
    assert 'Traceback' not in stderr and len(stderr.splitlines()) < 40
    assert 50 < steps[-1] < 600, f'{sig!r} came too late: {steps}'
    # It says the step it saves at, and nothing else warns.
    assert f'saving checkpoint {steps[-1]}, then stopping.' in stderr
    assert 'tracked_metric' not in stderr
  assert not os.path.exists(tmp_path / 'eval_test.json')

  relaunched = run_main(flags, tmp_path)
  assert relaunched.returncode == 0, relaunched.stderr[-3000:]
  assert f'Resuming from checkpoint {steps[-1]}' in relaunched.stderr
  assert read_json(tmp_path, 'eval_test.json')['log_loss'] == pytest.approx(
    long_straight_log_loss, rel=1e-5, abs=1e-7
  )
  with open(tmp_path / 'metrics.jsonl') as f:
    logged = [json.loads(line) for line in f]
  train_steps = [r['step'] for r in logged if 'train_loss' in r]
  assert train_steps == sorted(set(train_steps))  # Each step once.


def tear(checkpoint_dir):
  """Empties every file of a checkpoint, as a crash mid-write might."""
  for folder, _, files in os.walk(checkpoint_dir):
    for name in files:
      open(os.path.join(folder, name), 'w').close()


@pytest.mark.slow  # Trains for real.
def test_torn_newest_checkpoint_is_moved_aside(
  flat_dataset, tmp_path, straight_log_loss
):
  torn = str(tmp_path / 'torn')
  train.train_and_evaluate(
    helpers.tiny_config(flat_dataset, num_train_steps=20), torn
  )
  tear(os.path.join(torn, 'checkpoints', '20'))
  state = train.train_and_evaluate(
    helpers.tiny_config(flat_dataset, num_train_steps=30), torn
  )
  assert int(state.step) == 30
  moved = os.listdir(os.path.join(torn, workdir.QUARANTINE))
  assert len(moved) == 1 and moved[0].startswith('20-')
  assert read_json(torn, 'eval_test.json')['log_loss'] == pytest.approx(
    straight_log_loss, rel=1e-6
  )


@pytest.mark.slow  # Trains for real.
def test_no_restorable_checkpoint_stops_the_run(flat_dataset, tmp_path):
  config = helpers.tiny_config(flat_dataset, num_train_steps=20)
  train.train_and_evaluate(config, str(tmp_path))
  for step in ('10', '20'):
    tear(os.path.join(tmp_path, 'checkpoints', step))
  with pytest.raises(
    CheckpointError, match='no checkpoint in .* can be restored'
  ):
    train.train_and_evaluate(config, str(tmp_path))
  moved = os.listdir(os.path.join(tmp_path, workdir.QUARANTINE))
  assert sorted(m.split('-')[0] for m in moved) == ['10', '20']


def test_divergence_stops_before_saving_the_diverged_state(
  flat_dataset, tmp_path
):
  config = helpers.tiny_config(
    flat_dataset,
    num_train_steps=50,
    checkpoint_every_steps=1,
    eval_every_steps=1000,
    optimizer__learning_rate=1e12,
  )
  with pytest.raises(DivergenceError, match=r'diverged at step (\d+)') as e:
    train.train_and_evaluate(config, str(tmp_path))
  bad_step = int(e.value.args[0].split('step ')[1].split(' ')[0])
  manager = checkpointing.create_checkpoint_manager(str(tmp_path), 3)
  assert bad_step > 1 and manager.latest_step() == bad_step - 1
  abstract = state_lib.create_train_state(jax.random.key(0), config, 50)
  restored = manager.restore(
    bad_step - 1,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)),
  ).state
  for leaf in jax.tree.leaves(restored.params):
    assert np.all(np.isfinite(leaf))


# --- Workdir files someone else touched -------------------------------------


def test_a_cut_last_metrics_line_is_dropped_and_a_bad_one_named(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  with open(path, 'w') as f:
    f.write('{"step": 10, "train_loss": 0.5}\n{"step": 1')
  assert metric_writers.read_jsonl(path) == [{'step': 10, 'train_loss': 0.5}]
  with open(path, 'w') as f:
    f.write('{"step": 10}\n{"step": 1\n{"step": 30}\n')
  with pytest.raises(UsageError, match='metrics.jsonl line 2 is not a JSON'):
    metric_writers.read_jsonl(path)


@pytest.mark.slow  # Trains, then relaunches twice.
def test_damaged_workdir_files_are_repaired_or_named(
  flat_dataset, tmp_path, straight_log_loss
):
  run_dir = str(tmp_path)
  config = helpers.tiny_config(flat_dataset, num_train_steps=20)
  train.train_and_evaluate(config, run_dir)
  # A kill mid-append left half a line; the index cache was cut short; the
  # newest checkpoint was copied without its metadata file.
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 1')
  cache = (tmp_path / 'index_cache.json').read_text()
  (tmp_path / 'index_cache.json').write_text(cache[: len(cache) // 2])
  os.remove(tmp_path / 'checkpoints' / '20' / '_CHECKPOINT_METADATA')
  longer = helpers.tiny_config(flat_dataset, num_train_steps=30)
  state = train.train_and_evaluate(longer, run_dir)
  assert int(state.step) == 30
  assert read_json(run_dir, 'eval_test.json')['log_loss'] == pytest.approx(
    straight_log_loss, rel=1e-6
  )
  steps = [r['step'] for r in metric_writers.read_jsonl(
    str(tmp_path / 'metrics.jsonl')) if 'train_loss' in r]  # fmt: skip
  assert steps == sorted(set(steps)) and steps[-1] == 30
  # A config.json edited by hand into invalid JSON: one line, for training
  # and for predict alike.
  (tmp_path / 'config.json').write_text('{"seed": 0,')
  with pytest.raises(UsageError, match=r'config.json is not valid JSON'):
    train.train_and_evaluate(longer, run_dir)
  with pytest.raises(UsageError, match=r'config.json is not valid JSON'):
    predict.Predictor(run_dir)


def test_a_cut_probe_feature_cache_is_recomputed(tmp_path, caplog):
  path = str(tmp_path / 'features_val.npz')
  keys, stamp = np.array(['a.jpg', 'b.jpg']), np.array(['sha', '224'])
  np.savez(path, keys=keys, stamp=stamp, features=np.ones((2, 4)))
  np.testing.assert_array_equal(probe.read_features(path, keys, stamp), 1.0)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  caplog.set_level('WARNING')
  assert probe.read_features(path, keys, stamp) is None
  assert any('Recomputing the features' in m for m in caplog.messages)


# --- A full disk, for real ---------------------------------------------------

MB = 1 << 20


@pytest.mark.slow  # Trains twice on a tmpfs.
def test_a_disk_that_fills_stops_before_the_checkpoint_and_resumes_exactly(
  flat_dataset, tmp_path, monkeypatch, straight_log_loss
):
  with helpers.small_disk(tmp_path / 'disk', 32) as disk:
    run_dir = os.path.join(disk, 'w')
    config = helpers.tiny_config(flat_dataset, num_train_steps=30)
    save = checkpointing.save
    filler = []

    def save_then_fill(manager, step, *args, **kwargs):
      save(manager, step, *args, **kwargs)
      checkpointing.wait_until_saved(manager)
      if step == 10:  # Someone fills the disk, 2 MB left.
        filler.append(helpers.fill(disk, 2 * MB))

    monkeypatch.setattr(checkpointing, 'save', save_then_fill)
    with pytest.raises(DiskFullError) as error:
      train.train_and_evaluate(config, run_dir)
    message = str(error.value)
    assert message.startswith('the disk is full writing checkpoint 20 (')
    assert re.search(r': 2\.0 MB free, about 8\.\d MB needed\)', message)
    assert sorted(os.listdir(os.path.join(run_dir, 'checkpoints'))) == ['10']
    steps = [r['step'] for r in metric_writers.read_jsonl(
      os.path.join(run_dir, 'metrics.jsonl')) if 'train_loss' in r]  # fmt: skip
    assert steps == [5, 10, 15, 20]
    monkeypatch.undo()
    os.remove(filler[0])  # Space freed: the relaunch ends as a straight run.
    train.train_and_evaluate(config, run_dir)
    assert read_json(run_dir, 'eval_test.json')['log_loss'] == pytest.approx(
      straight_log_loss, rel=1e-6
    )


def test_an_unguarded_write_to_a_full_disk_is_one_line(tmp_path, monkeypatch):
  """What no free-space check foresaw: a file, metrics, a checkpoint."""
  with helpers.small_disk(tmp_path / 'disk', 8) as disk:
    config_path = os.path.join(disk, 'config.json')
    fileio.write_json(config_path, {'seed': 0})
    helpers.fill(disk, 64 << 10)
    with pytest.raises(DiskFullError, match=r'writing config\.json \('):
      fileio.write_json(config_path, {'big': 'x' * (1 << 20)})
    assert read_json(disk, 'config.json') == {'seed': 0}  # Intact.
    assert not [n for n in os.listdir(disk) if n.endswith('.tmp')]
    rows = [predict.report.prediction_row(f'/p/{i}.jpg', 0.5)
            for i in range(5000)]  # fmt: skip
    with pytest.raises(DiskFullError, match=r'writing predictions\.csv'):
      predict.write_predictions_csv(rows, os.path.join(disk, 'predictions.csv'))

    writer = metric_writers.JsonlWriter(os.path.join(disk, 'm.jsonl'))
    with pytest.raises(DiskFullError, match=r'writing metrics\.jsonl'):
      for step in range(100_000):
        writer.write_scalars(step, {'train_loss': 0.5})

    # The free-space check passes; the disk fills while orbax writes.
    monkeypatch.setattr(checkpointing, 'space_needed', lambda state: 0)
    manager = checkpointing.create_checkpoint_manager(
      os.path.join(disk, 'w'), 3
    )
    state = {'w': jnp.asarray(np.random.default_rng(0).random(1 << 19))}
    iterator = mesh.DevicePrefetchIterator(
      input_pipeline.CachedBatchIterator(
        input_pipeline.TrainOrder(4, 0), {'x': np.zeros((4, 1))}, 2
      ),
      mesh.create_shardings()[0],
      0,
    )
    with pytest.raises(DiskFullError, match='writing checkpoint 1 '):
      checkpointing.save(manager, 1, state, iterator)
      checkpointing.wait_until_saved(manager)


@pytest.mark.slow  # Starts main.py.
def test_training_on_a_full_disk_says_so_in_one_line(flat_dataset, tmp_path):
  with helpers.small_disk(tmp_path / 'disk', 16) as disk:
    helpers.fill(disk, 3 * MB)  # Room for the index and metrics only.
    result = run_main(helpers.tiny_flags(flat_dataset), os.path.join(disk, 'w'))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: the disk is full writing checkpoint 10 (')
