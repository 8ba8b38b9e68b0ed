"""Temperature scaling (Guo et al., 2017): one scalar T fitted on validation
so that sigmoid(logit / T) is as likely as possible there.

T leaves every decision as it was (the sign of the logit) and moves only the
probabilities: below 1 it sharpens an under-confident model (label smoothing
trains one), above 1 it softens an over-confident one. A run with
eval.temperature_scaling fits a T for each checkpoint it saves, on that
step's validation predictions, and keeps them by step in
WORKDIR/calibration.json; everything that restores a checkpoint (predict,
eval, export, the page) divides its logits by that checkpoint's T, and the
test split's figures are divided by the last step's.
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


def fit_record(labels: np.ndarray, logits: np.ndarray) -> dict:
  """A checkpoint's entry in calibration.json: T, and validation's log-loss
  and calibration error before and after (the latter in-sample)."""
  temperature = fit_temperature(labels, logits)

  def figures(x):
    return {
      'log_loss': metrics.log_loss(labels, x),
      'calibration_error': metrics.expected_calibration_error(labels, x),
    }

  return {
    'temperature': temperature,
    'fitted_on': f'validation ({len(labels)} images)',
    'validation_before': figures(logits),
    'validation_after': figures(logits / temperature),
  }


def describe(fit: dict) -> str:
  """fit_record's entry in words."""
  before, after = fit['validation_before'], fit['validation_after']
  return (
    f'temperature {fit["temperature"]:.3f} fitted on {fit["fitted_on"]}: '
    f'log-loss {before["log_loss"]:.4f} -> {after["log_loss"]:.4f}, '
    f'calibration error {before["calibration_error"]:.4f} -> '
    f'{after["calibration_error"]:.4f} (in-sample)'
  )


def read_fits(workdir: str) -> dict[int, dict]:
  """calibration.json: fit_record's entries by checkpoint step ({} if none)."""
  path = workdir_lib.path(workdir, workdir_lib.CALIBRATION)
  if not os.path.exists(path):
    return {}
  return {int(step): fit for step, fit in fileio.read_json(path).items()}


def add_fit(workdir: str, step: int, fit: dict) -> None:
  """Adds (or replaces, on a resumed run) checkpoint `step`'s entry."""
  fits = read_fits(workdir) | {step: fit}
  fileio.write_json(
    workdir_lib.path(workdir, workdir_lib.CALIBRATION),
    {str(s): fits[s] for s in sorted(fits)},
  )


def read_temperature(workdir: str, step: int) -> float:
  """T fitted for checkpoint `step` of `workdir`; 1.0 (logits as they are)
  when none was, with a warning when others were."""
  fits = read_fits(workdir)
  if step in fits:
    return float(fits[step]['temperature'])
  if fits:
    logging.warning(
      'calibration.json has no temperature for step %d (it has steps %s); '
      'its logits are used uncalibrated.',
      step,
      ', '.join(map(str, sorted(fits))),
    )
  return 1.0
