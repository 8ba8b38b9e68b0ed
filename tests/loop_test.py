"""Tests for catdog_jax.loop: the training loop's host-side helpers."""

import io
import logging as std_logging
import os
import signal

import numpy as np
import pytest
from absl import logging

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
  sizes = [32] * 10
  eta = loop.Eta(sizes, [(10, 8)], 32, 1, 4)
  log = loop.TrainLog(writer, eta, sizes, global_batch_size=4, start_step=0)
  for loss in (1.0, 3.0):
    log.append({'loss': loss, 'accuracy': 0.5})
  log.check_and_write(2)
  step, scalars = writer.scalars[0]
  assert step == 2 and scalars['train_loss'] == 2.0
  assert scalars['images_per_sec'] == pytest.approx(
    4 * scalars['steps_per_sec']
  )
  log.append({'loss': float('nan'), 'accuracy': 0.5})
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


def test_the_progress_line_says_where_the_run_is():
  scalars = {'images_per_sec': 212.3, 'train_loss': 0.4123,
             'train_accuracy': 0.861}  # fmt: skip
  assert loop.progress_line(600, 1758, 112, scalars, 250) == (
    'step 600/1758 (34%) | 112 px | 212 img/s | loss 0.412 | acc 0.86 | '
    'ETA 4 min'
  )
  assert loop.progress_line(600, 1758, 112, scalars, None).endswith('ETA ?')


def quick_cpu_timeline(num_steps=1758, log_every=50):
  """A quick_cpu-like run: six equal shares of steps at growing sizes, a
  step costing pixels x 2e-6 s + 20 ms, a validation at steps 1000 and the
  end and the test evaluation (1,960 images each, 2 passes)."""
  shares = (96, 112, 128, 128, 160, 160)
  sizes = [shares[(s - 1) * 6 // num_steps] for s in range(1, num_steps + 1)]
  cost = {size: 2e-6 * size**2 + 0.02 for size in set(sizes)}
  evaluations = [(1000, 1960), (num_steps, 1960), (num_steps, 1960)]
  per_image = cost[160] / 64 * 2 / 3 * 1.2  # A little dearer than forward.
  return sizes, cost, evaluations, per_image


def test_the_eta_holds_within_15_percent_from_the_first_line():
  """Calibrated with 10% timing errors, as one timed step gives."""
  sizes, cost, evaluations, per_image = quick_cpu_timeline()
  total = sum(cost[s] for s in sizes)
  total += sum(n * per_image for _, n in evaluations)
  eta = loop.Eta(sizes, evaluations, 160, 2, 64)
  rng = np.random.default_rng(0)
  for size in set(sizes):
    eta.record_steps(size, 1, cost[size] * rng.uniform(0.9, 1.1))
  eta.record_evaluation(64, 64 * per_image * 1.1)
  elapsed, errors = 0.0, [abs(eta.seconds_left(0) - total) / total]
  for step in range(1, len(sizes) + 1):
    elapsed += cost[sizes[step - 1]]
    if step % 50 == 0:
      eta.record_steps(sizes[step - 1], 50, 50 * cost[sizes[step - 1]])
      errors.append(abs(elapsed + eta.seconds_left(step) - total) / total)
    if step == 1000:
      eta.record_evaluation(1960, 1960 * per_image)
      elapsed += 1960 * per_image
  assert max(errors) < 0.15, max(errors)
  # Pricing every step at the first size's cost, as before, is far off.
  first_size_total = len(sizes) * cost[sizes[0]]
  assert abs(first_size_total - total) / total > 0.3


@pytest.mark.parametrize('load', [2.0, 0.5])
def test_the_first_progress_line_reprices_a_calibration_under_load(load):
  """Calibrated while another process took one of two cores (every step
  and evaluation timed `load` times their cost), or while one that ran
  since was idle (0.5): the first progress line holds within 15%."""
  sizes, cost, evaluations, per_image = quick_cpu_timeline()
  total = sum(cost[s] for s in sizes)
  total += sum(n * per_image for _, n in evaluations)
  eta = loop.Eta(sizes, evaluations, 160, 2, 64)
  for size in set(sizes):
    eta.record_calibration(size, cost[size] * load)
  eta.record_evaluation(64, 64 * per_image * load, calibrating=True)
  assert abs(eta.seconds_left(0) - total * load) / (total * load) < 0.01
  first = sizes[0]
  eta.record_steps(first, 50, 50 * cost[first])  # The first log period.
  elapsed = 50 * cost[first]
  assert eta.load_factor() == pytest.approx(1 / load)
  assert abs(elapsed + eta.seconds_left(50) - total) / total < 0.15


def test_a_terminal_gets_a_bar_and_the_log_goes_above_it():
  class Terminal(io.StringIO):
    def isatty(self):
      return True

  terminal = Terminal()
  sizes = [32] * 10
  eta = loop.Eta(sizes, [(10, 8)], 32, 1, 4)
  with loop.terminal_bar(10, 0, terminal) as bar:
    assert bar is not None
    log = loop.TrainLog(Recorder(), eta, sizes, 4, 0, bar)
    for _ in range(5):
      log.append({'loss': 0.5, 'accuracy': 0.75})
    log.check_and_write(5)
    # What absl's handler does with any log line while the bar is up.
    logging.get_absl_handler().python_handler.emit(
      std_logging.makeLogRecord({'msg': 'a line above the bar', 'levelno': 30})
    )
  shown = terminal.getvalue()
  assert '5/10' in shown and 'acc 0.75' in shown
  assert 'a line above the bar' in shown
  with loop.terminal_bar(10, 0, io.StringIO()) as bar:
    assert bar is None  # A file or a pipe gets progress lines.
