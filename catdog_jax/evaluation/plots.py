"""Matplotlib figures of a run, written as PNG files (Agg, no display).

Each function takes plain arrays and a path, so `--mode=report` can redraw
every figure from what the workdir holds.
"""

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as sk_metrics  # noqa: E402

from catdog_jax.classes import CLASS_NAMES  # noqa: E402

DPI = 120
HEATMAP_CMAP = 'jet'


def _save(figure, path: str, tight: bool = True) -> str:
  if tight:  # tight_layout cannot place a colorbar: pass False with one.
    figure.tight_layout()
  figure.savefig(path, dpi=DPI)
  plt.close(figure)
  return path


# Panel title -> (metrics.jsonl key, legend label) of each line in it.
CURVES = {
  'loss': (('train_loss', 'train'), ('val_log_loss', 'val')),
  'accuracy': (('train_accuracy', 'train'), ('val_accuracy', 'val')),
}


def plot_curves(records: list[dict], path: str) -> str:
  """Training and validation loss and accuracy against step."""
  figure, axes = plt.subplots(1, len(CURVES), figsize=(10, 4))
  for ax, (title, lines) in zip(axes, CURVES.items(), strict=True):
    for key, label in lines:
      points = [(r['step'], r[key]) for r in records if key in r]
      if points:
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, 'o-' if label == 'val' else '-', label=label)
    ax.set_xlabel('step')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend()
  return _save(figure, path)


def plot_confusion_matrix(confusion: list[list[int]], path: str) -> str:
  """Counts and row-normalised rates, rows true, columns predicted."""
  counts = np.asarray(confusion)
  rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
  figure, ax = plt.subplots(figsize=(4.5, 4))
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  for (row, col), count in np.ndenumerate(counts):
    color = 'white' if rates[row, col] > 0.5 else 'black'
    ax.text(col, row, f'{count}\n{rates[row, col]:.1%}', ha='center',
            va='center', color=color)  # fmt: skip
  ax.set_xticks(range(2), CLASS_NAMES)
  ax.set_yticks(range(2), CLASS_NAMES)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title('Confusion matrix (test)')
  return _save(figure, path)


def plot_roc(labels: np.ndarray, logits: np.ndarray, path: str) -> str:
  """ROC curve of the dog score, with its AUC."""
  fpr, tpr, _ = sk_metrics.roc_curve(labels, logits)
  auc = sk_metrics.auc(fpr, tpr)
  figure, ax = plt.subplots(figsize=(4.5, 4))
  ax.plot(fpr, tpr, label=f'AUC = {auc:.4f}')
  ax.plot([0, 1], [0, 1], '--', color='grey', label='chance')
  ax.set_xlabel('false positive rate (cats called dogs)')
  ax.set_ylabel('true positive rate (dogs found)')
  ax.set_title('ROC (test)')
  ax.legend(loc='lower right')
  ax.grid(alpha=0.3)
  return _save(figure, path)


def plot_image_grid(
  images_rgb: list[np.ndarray],
  titles: list[str],
  path: str,
  *,
  heading: str,
  colorbar_label: str | None = None,
  columns: int = 4,
) -> str:
  """Images in a grid, each with a title line, under a heading; with
  `colorbar_label`, a bar for HEATMAP_CMAP's 0..1 (see overlay_heatmap)."""
  rows = max(1, -(-len(images_rgb) // columns))
  figure, axes = plt.subplots(
    rows, columns, figsize=(3 * columns, 3.2 * rows + 0.6), squeeze=False
  )
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, title in zip(axes.flat, images_rgb, titles, strict=False):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
  figure.suptitle(heading)
  if colorbar_label:
    mappable = plt.cm.ScalarMappable(cmap=HEATMAP_CMAP)
    figure.colorbar(
      mappable, ax=axes.ravel().tolist(), shrink=0.6, label=colorbar_label
    )
  return _save(figure, path, tight=not colorbar_label)


def plot_sweep(
  values: list[str], metrics: dict[str, list[float]], key: str, path: str
) -> str:
  """Test metrics against the one swept key's values."""
  figure, axes = plt.subplots(
    1, len(metrics), figsize=(4.5 * len(metrics), 3.5)
  )
  for ax, (name, series) in zip(
    np.atleast_1d(axes), metrics.items(), strict=True
  ):
    ax.plot(range(len(values)), series, 'o-')
    ax.set_xticks(range(len(values)), values)
    ax.set_xlabel(key)
    ax.set_title(f'test {name}')
    ax.grid(alpha=0.3)
  return _save(figure, path)


def overlay_heatmap(image_rgb: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
  """A [0, 1] heatmap over an RGB uint8 image, as RGB uint8."""
  colored = plt.get_cmap(HEATMAP_CMAP)(np.clip(heatmap, 0, 1))[..., :3] * 255
  blended = 0.55 * image_rgb.astype(np.float32) + 0.45 * colored
  return blended.astype(np.uint8)
