"""Tests for catdog_jax.metrics."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from catdog_jax.evaluation import metrics


def test_metrics_on_a_known_confusion():
  # 3 cats (one called dog), 2 dogs (one called cat).
  labels = np.array([0, 0, 0, 1, 1])
  logits = np.array([-2.0, -1.0, 0.5, 3.0, -0.5])
  result = metrics.classification_metrics(labels, logits)
  assert result['confusion_matrix'] == [[2, 1], [1, 1]]
  assert result['accuracy'] == pytest.approx(0.6)
  assert result['precision'] == pytest.approx(0.5)
  assert result['recall'] == pytest.approx(0.5)
  assert result['f1'] == pytest.approx(0.5)
  assert result['num_examples'] == 5
  assert result['recall_per_class'] == pytest.approx({'cat': 2 / 3, 'dog': 0.5})
  assert result['roc_auc'] == pytest.approx(
    sk_metrics.roc_auc_score(labels, logits)
  )


def test_log_loss_matches_sklearn_and_survives_huge_logits():
  labels = np.array([0, 1, 1, 0])
  logits = np.array([-3.0, 2.0, -0.5, 0.1])
  probs = 1 / (1 + np.exp(-logits))
  assert metrics.log_loss(labels, logits) == pytest.approx(
    sk_metrics.log_loss(labels, probs), rel=1e-12
  )
  huge = metrics.log_loss(np.array([1, 0]), np.array([-1000.0, 1000.0]))
  assert huge == pytest.approx(1000.0)


def test_roc_auc_is_none_with_one_class():
  result = metrics.classification_metrics(np.ones(3, int), np.ones(3))
  assert result['roc_auc'] is None


def test_classification_report_has_the_seed_layout():
  report = metrics.classification_report(
    np.array([0, 1, 1, 0]), np.array([-1.0, 1.0, -1.0, -1.0])
  )
  for row in ('cat', 'dog', 'accuracy', 'macro avg', 'weighted avg'):
    assert row in report
  assert 'precision    recall  f1-score   support' in report


def test_calibration_error_by_hand_and_at_its_extremes():
  # Confidences 0.9, 0.9 (one right, one wrong) and 0.6 (right): two bins.
  labels = np.array([1, 0, 0])
  p_dog = np.array([0.9, 0.9, 0.4])
  logits = np.log(p_dog / (1 - p_dog))
  expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
  assert metrics.expected_calibration_error(labels, logits) == pytest.approx(
    expected
  )
  # Always right and sure: none. Always wrong and sure: all of it.
  labels = np.array([0, 1, 0, 1])
  sure = np.array([-50.0, 50.0, -50.0, 50.0])
  assert metrics.expected_calibration_error(labels, sure) == pytest.approx(0)
  assert metrics.expected_calibration_error(labels, -sure) == pytest.approx(1)
