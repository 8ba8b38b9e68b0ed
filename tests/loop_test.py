"""Tests for catdog_jax.loop: the training loop's host-side helpers."""

import os
import signal

import numpy as np
import pytest

from catdog_jax import loop
from catdog_jax import metric_writers
from catdog_jax.errors import DivergenceError


def test_first_nonfinite_names_the_step():
  metrics = [
    {'loss': 0.5, 'grad_norm': 1.0},
    {'loss': 0.4, 'grad_norm': np.inf},
  ]
  assert loop.first_nonfinite(metrics, first_step=11)[0] == 12
  assert loop.first_nonfinite(metrics[:1], first_step=11) is None


class Recorder(metric_writers.MetricWriter):
  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, scalars))

  def write_hparams(self, hparams):
    del hparams


def test_train_log_averages_each_period_and_stops_on_a_nan():
  writer = Recorder()
  log = loop.TrainLog(writer, num_steps=10, global_batch_size=4, start_step=0)
  for loss in (1.0, 3.0):
    log.append({'loss': loss})
  log.check_and_write(2)
  step, scalars = writer.scalars[0]
  assert step == 2 and scalars['train_loss'] == 2.0
  assert scalars['images_per_sec'] == pytest.approx(
    4 * scalars['steps_per_sec']
  )
  log.append({'loss': float('nan')})
  with pytest.raises(DivergenceError, match='diverged at step 3'):
    log.check_and_write(3)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_first_signal_asks_to_stop(signum):
  with loop.StopSignal() as stop:
    assert not stop.requested
    os.kill(os.getpid(), signum)
    assert stop.requested


def test_a_second_ctrl_c_aborts_at_once():
  with loop.StopSignal(), pytest.raises(KeyboardInterrupt):
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
