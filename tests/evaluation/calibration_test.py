"""Temperature scaling: the fit, the file, and every path that applies it."""

import json
import os

import jax
import numpy as np
import pytest

from catdog_jax import train
from catdog_jax import workdir as workdir_lib
from catdog_jax.evaluation import calibration
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import metrics
from catdog_jax.evaluation import predict
from catdog_jax.evaluation import report
from catdog_jax.serving import export
from tests import helpers
from tests.serving.export_test import load


@pytest.mark.parametrize('true_temperature', [0.5, 1.0, 2.5])
def test_the_fit_finds_the_temperature_the_labels_were_drawn_with(
  true_temperature,
):
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 4.0, 20_000)
  labels = rng.random(20_000) < metrics.sigmoid(logits / true_temperature)
  fitted = calibration.fit_temperature(labels.astype(int), logits)
  assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_the_fit_lowers_validation_log_loss_and_keeps_every_decision():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 500)
  # Under-confident, as label smoothing leaves a model: T below 1 sharpens.
  logits = (2 * labels - 1) * rng.uniform(0.2, 1.5, 500)
  logits[:40] *= -1  # Some mistakes.
  record = calibration.fit_record(labels, logits)
  assert record['temperature'] < 1
  before, after = record['validation_before'], record['validation_after']
  assert after['log_loss'] < before['log_loss']
  scaled = logits / record['temperature']
  assert np.array_equal(scaled > 0, logits > 0)


def test_each_checkpoint_is_divided_by_its_own_fit(tmp_path, caplog):
  workdir = str(tmp_path)
  assert calibration.read_temperature(workdir, 10) == 1.0
  calibration.add_fit(workdir, 20, {'temperature': 0.7})
  calibration.add_fit(workdir, 10, {'temperature': 0.6})
  calibration.add_fit(workdir, 20, {'temperature': 0.8})  # Resumed.
  assert calibration.read_fits(workdir) == {
    10: {'temperature': 0.6},
    20: {'temperature': 0.8},
  }
  assert calibration.read_temperature(workdir, 10) == 0.6
  assert calibration.read_temperature(workdir, 30) == 1.0
  assert 'no temperature for step 30 (it has steps 10, 20)' in caplog.text


@pytest.fixture(scope='module')
def calibrated_workdir(folder_dataset, tmp_path_factory):
  """trained_run's run again (same config, data and seed), calibrated."""
  workdir = str(tmp_path_factory.mktemp('calibrated'))
  train.train_and_evaluate(
    helpers.tiny_config(
      folder_dataset, num_train_steps=40, eval__temperature_scaling=True
    ),
    workdir,
  )
  return workdir


def read(workdir, name):
  with open(workdir_lib.path(workdir, name)) as f:
    return json.load(f)


def test_a_calibrated_run_reports_its_test_split_calibrated(
  calibrated_workdir, trained_run
):
  fits = calibration.read_fits(calibrated_workdir)
  assert sorted(fits) == [10, 20, 30, 40]  # One for each checkpoint.
  fit = fits[40]
  assert 0 < fit['temperature'] != 1.0
  _, labels, plain_logits = report.read_predictions(trained_run.workdir)
  _, _, calibrated_logits = report.read_predictions(calibrated_workdir)
  # The same run, deterministic on this machine: the logits divided by T.
  np.testing.assert_allclose(
    calibrated_logits, plain_logits / fit['temperature'], rtol=1e-5
  )
  test = read(calibrated_workdir, workdir_lib.EVAL_TEST)
  plain = read(trained_run.workdir, workdir_lib.EVAL_TEST)
  assert test['accuracy'] == plain['accuracy']
  assert test['log_loss'] == pytest.approx(
    metrics.log_loss(labels, plain_logits / fit['temperature']), rel=1e-5
  )
  with open(os.path.join(calibrated_workdir, 'report.md')) as f:
    assert f'temperature {fit["temperature"]:.3f} fitted on' in f.read()
  # Validation's figures are those measured; the fit's are beside them.
  val = read(calibrated_workdir, workdir_lib.EVAL_VAL)
  assert val['log_loss'] == pytest.approx(fit['validation_before']['log_loss'])


def test_predict_eval_and_export_divide_by_the_fitted_temperature(
  calibrated_workdir, tmp_path_factory
):
  photos = tmp_path_factory.mktemp('photos')
  helpers.write_dataset(photos, 'folders', per_class=4, seed=5)
  predictor = predict.Predictor(calibrated_workdir)
  # The restored checkpoint's own fit (the best by validation accuracy).
  fits = calibration.read_fits(calibrated_workdir)
  temperature = fits[predictor.step]['temperature']
  assert predictor.temperature == temperature
  rows, _ = predict.predict(calibrated_workdir, str(photos))
  paths = [row['path'] for row in rows]
  size = predictor.config.data.image_size
  inputs = helpers.photos_as_inputs(paths, size)
  batch = {
    'image': inputs,
    'label': np.zeros(len(inputs), np.int32),
    'mask': np.ones(len(inputs), bool),
  }
  plain_fn = jax.jit(
    lambda variables, batch: evaluate.eval_step(
      variables, batch, apply_fn=predictor.apply_fn
    )['logit']
  )
  plain = np.asarray(plain_fn(predictor.variables, batch), np.float64)
  np.testing.assert_allclose(
    [row['prob_dog'] for row in rows],
    metrics.sigmoid(plain / temperature),
    atol=1e-5,
  )
  folder = export.export_workdir(
    calibrated_workdir, str(tmp_path_factory.mktemp('export'))
  )
  model_json = read(folder, export.METADATA)
  assert model_json['temperature'] == temperature
  np.testing.assert_allclose(
    np.asarray(load(folder).call(inputs)),
    metrics.sigmoid(plain / temperature),
    atol=1e-5,
  )
  result, _ = predict.evaluate_folder(calibrated_workdir, str(photos))
  labels = np.array(['Dogs' in p.split(os.sep)[-2] for p in paths], int)
  assert result['log_loss'] == pytest.approx(
    metrics.log_loss(labels, plain / temperature), abs=1e-5
  )
