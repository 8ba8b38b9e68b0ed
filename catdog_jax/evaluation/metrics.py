"""Classification metrics from labels and logits (dog = positive class).

scikit-learn is imported where it is used: it takes 0.8 s to import, which
a command that stops at a bad setting should not wait for.
"""

import numpy as np

from catdog_jax import classes
from catdog_jax.classes import CLASS_NAMES


def sigmoid(logits: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-logits))


def example_losses(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
  """Binary cross-entropy of each example, computed stably in float64."""
  logits = np.asarray(logits, np.float64)
  return np.logaddexp(0.0, logits) - labels * logits


def log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
  """Mean binary cross-entropy over the examples."""
  return float(np.mean(example_losses(labels, logits)))


def expected_calibration_error(
  labels: np.ndarray, logits: np.ndarray, num_bins: int = 15
) -> float:
  """How far confidence is from accuracy: the predicted class's probability
  binned in `num_bins` equal widths over [0.5, 1], |accuracy - mean
  confidence| per bin weighted by its share of the examples (Guo et al.,
  2017, with two classes)."""
  p_dog = sigmoid(np.asarray(logits, np.float64))
  correct = classes.is_dog(logits).astype(np.int32) == labels
  confidence = np.maximum(p_dog, 1.0 - p_dog)
  bins = np.minimum(((confidence - 0.5) * 2 * num_bins).astype(int),
                    num_bins - 1)  # fmt: skip
  error = 0.0
  for b in np.unique(bins):
    in_bin = bins == b
    error += np.abs(correct[in_bin].mean() - confidence[in_bin].mean()) * (
      in_bin.mean()
    )
  return float(error)


def classification_metrics(
  labels: np.ndarray, logits: np.ndarray
) -> dict[str, object]:
  """Accuracy, precision, recall, F1, each class's recall, ROC AUC,
  log-loss, expected calibration error, confusion matrix.

  Args:
    labels: int array of 0 (cat) / 1 (dog).
    logits: float array of the dog logit, same length.

  Returns:
    A JSON-able dict; `roc_auc` is None when only one class is present.
  """
  from sklearn import metrics as sk_metrics

  predictions = classes.is_dog(logits).astype(np.int32)
  precision, recall, f1, _ = sk_metrics.precision_recall_fscore_support(
    labels, predictions, average='binary', pos_label=1, zero_division=0
  )
  both_classes = len(np.unique(labels)) == 2
  roc_auc = sk_metrics.roc_auc_score(labels, logits) if both_classes else None
  confusion = sk_metrics.confusion_matrix(labels, predictions, labels=[0, 1])
  return {
    'accuracy': float(np.mean(predictions == labels)),
    'precision': float(precision),
    'recall': float(recall),
    'f1': float(f1),
    'recall_per_class': {
      name: float(confusion[i, i] / max(confusion[i].sum(), 1))
      for i, name in enumerate(CLASS_NAMES)
    },
    'roc_auc': None if roc_auc is None else float(roc_auc),
    'log_loss': log_loss(labels, logits),
    'calibration_error': expected_calibration_error(labels, logits),
    'confusion_matrix': confusion.tolist(),
    'num_examples': int(len(labels)),
  }


def classification_report(labels: np.ndarray, logits: np.ndarray) -> str:
  """scikit-learn's per-class report, in the seed's layout."""
  from sklearn import metrics as sk_metrics

  return sk_metrics.classification_report(
    labels,
    classes.is_dog(logits).astype(np.int32),
    labels=[0, 1],
    target_names=list(CLASS_NAMES),
    digits=4,
    zero_division=0,
  )
