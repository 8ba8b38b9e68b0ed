"""Temperature scaling (Guo et al., 2017): one scalar T fitted on validation
so that sigmoid(logit / T) is as likely as possible there.

T leaves every decision as it was (the sign of the logit) and moves only the
probabilities: below 1 it sharpens an under-confident model (label smoothing
trains one), above 1 it softens an over-confident one. A run with
eval.temperature_scaling fits T on its final validation predictions and
writes it, with the checkpoint step it belongs to, to WORKDIR/calibration.json;
everything that restores that checkpoint (the test split's figures, predict,
eval, export, the page) divides its logits by T.
"""

import os

import numpy as np
from absl import logging
from scipy import optimize

from catdog_jax import fileio
from catdog_jax import workdir as workdir_lib
from catdog_jax.evaluation import metrics

# T is searched in this range: wider would only fit noise on a few images.
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
  """The T in TEMPERATURE_RANGE minimising the log-loss of logits / T.

  The loss is convex in 1/T, so a bounded scalar search finds its minimum.
  """
  low, high = TEMPERATURE_RANGE
  result = optimize.minimize_scalar(
    lambda inverse: metrics.log_loss(labels, logits * inverse),
    bounds=(1 / high, 1 / low),
    method='bounded',
    options={'xatol': 1e-6},
  )
  return float(1 / result.x)


def fit_record(labels: np.ndarray, logits: np.ndarray, step: int) -> dict:
  """calibration.json's content: T for checkpoint `step`, and validation's
  log-loss and calibration error before and after (the latter in-sample)."""
  temperature = fit_temperature(labels, logits)
  scaled = logits / temperature

  def figures(x):
    return {
      'log_loss': metrics.log_loss(labels, x),
      'calibration_error': metrics.expected_calibration_error(labels, x),
    }

  return {
    'step': step,
    'temperature': temperature,
    'fitted_on': f'validation ({len(labels)} images)',
    'validation_before': figures(logits),
    'validation_after': figures(scaled),
  }


def read_temperature(workdir: str, step: int) -> float:
  """T fitted for checkpoint `step` of `workdir`; 1.0 (logits as they are)
  when none was, with a log line when one was fitted for another step."""
  path = workdir_lib.path(workdir, workdir_lib.CALIBRATION)
  if not os.path.exists(path):
    return 1.0
  record = fileio.read_json(path)
  if record['step'] != step:
    logging.warning(
      'calibration.json was fitted for step %d; step %d is used uncalibrated.',
      record['step'],
      step,
    )
    return 1.0
  return float(record['temperature'])
