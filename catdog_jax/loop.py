"""Host-side helpers of the training loop: progress lines, the divergence
check, the first steps' timing, and the signals that stop a run cleanly.

None of them touches the model; `train.train_and_evaluate` drives them.
"""

import signal
import threading
import time

import jax
import numpy as np
from absl import logging

from catdog_jax.errors import DivergenceError


def first_nonfinite(step_metrics: list[dict], first_step: int):
  """(step, metrics) of the first step with a non-finite loss or norm."""
  for offset, metrics in enumerate(step_metrics):
    if not all(np.isfinite(value) for value in metrics.values()):
      return first_step + offset, metrics
  return None


def raise_if_diverged(step_metrics: list[dict], first_step: int) -> None:
  """Raises DivergenceError naming the first step with a non-finite value."""
  bad = first_nonfinite(step_metrics, first_step)
  if bad:
    values = ', '.join(f'{k}={v}' for k, v in sorted(bad[1].items()))
    raise DivergenceError(
      f'training diverged at step {bad[0]} ({values}); no checkpoint of '
      'the diverged state was written'
    )


class TrainLog:
  """Turns per-step device metrics into log lines.

  Metrics stay on the device until `check_and_write` pulls them, once per
  log period, so the host never waits on a step in between.
  """

  def __init__(self, writer, num_steps, global_batch_size, start_step):
    self._writer = writer
    self._num_steps = num_steps
    self._global_batch_size = global_batch_size
    self._pending = []  # Metrics of steps _last_step + 1, _last_step + 2...
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def append(self, metrics):
    self._pending.append(metrics)

  def check_and_write(self, step: int):
    """Pulls the metrics of the steps up to `step`, checks, writes them.

    Raises:
      DivergenceError: if any of them is not finite.
    """
    count = step - self._last_step
    if count <= 0:
      return
    step_metrics = jax.device_get(self._pending[:count])
    self._pending = self._pending[count:]
    raise_if_diverged(step_metrics, self._last_step + 1)
    now = time.perf_counter()
    steps_per_sec = count / (now - self._last_time)
    scalars = {
      f'train_{key}': float(np.mean([m[key] for m in step_metrics]))
      for key in step_metrics[0]
    }
    scalars['steps_per_sec'] = steps_per_sec
    scalars['images_per_sec'] = steps_per_sec * self._global_batch_size
    scalars['eta_minutes'] = (self._num_steps - step) / steps_per_sec / 60
    self._writer.write_scalars(step, scalars)
    self._last_step, self._last_time = step, now

  def restart_clock(self):
    """Leaves the time since the last write (evaluation, saving) unmeasured."""
    self._last_time = time.perf_counter()


class FirstSteps:
  """Says, after a launch's second step, when the first progress line will
  come and how long the run will take: before it, a user sees nothing for
  as long as compiling and `log_every_steps` steps take."""

  def __init__(self, log_every_steps: int, num_steps: int):
    self._log_every_steps = log_every_steps
    self._num_steps = num_steps
    self._start = time.perf_counter()
    self._after_first = None

  def record(self, nth: int, metrics) -> None:
    """Waits for the launch's `nth` (1 or 2) step; logs after the second."""
    jax.block_until_ready(metrics)
    now = time.perf_counter()
    if nth == 1:
      self._after_first = now
      logging.info('First step done in %.1f s (compiling included).',
                   now - self._start)  # fmt: skip
      return
    seconds = now - self._after_first
    logging.info(
      'About %.2f s a step: a progress line every %d steps (%.0f s), '
      'about %.1f min for the %d steps of this launch.',
      seconds,
      self._log_every_steps,
      seconds * self._log_every_steps,
      seconds * self._num_steps / 60,
      self._num_steps,
    )


class StopSignal:
  """Remembers a SIGTERM (preemption) or a Ctrl-C (SIGINT) so the loop can
  checkpoint at the current step and stop; a second Ctrl-C aborts at once
  (KeyboardInterrupt), leaving the last checkpoint as it was."""

  SIGNALS = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C'}

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self._event.is_set():
      raise KeyboardInterrupt
    logging.warning(
      '%s: saving a checkpoint at the current step, then stopping%s.',
      self.SIGNALS[signum],
      ' (Ctrl-C again aborts at once)' if signum == signal.SIGINT else '',
    )
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()
