"""Matplotlib figures of a run, written as PNG files (Agg, no display).

Each function takes plain arrays and a path, so `--mode=report` can redraw
every figure from what the workdir holds.
"""

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from catdog_jax.classes import CLASS_NAMES  # noqa: E402

DPI = 120
HEATMAP_CMAP = 'jet'


def _save(figure, path: str) -> str:
  if figure.get_layout_engine() is None:
    figure.tight_layout()
  # zlib's fastest level: a report's PNGs encode in a third of the time
  # (the default level took 0.1 s of a 16-photo grid's 0.4), ~25% larger.
  figure.savefig(path, dpi=DPI, pil_kwargs={'compress_level': 1})
  plt.close(figure)
  return path


# Panel title -> (metrics.jsonl key, legend label) of each series in it.
CURVES = {
  'loss': (('train_loss', 'train'), ('val_log_loss', 'validation')),
  'accuracy': (('train_accuracy', 'train'), ('val_accuracy', 'validation')),
}


def curves_figure(records: list[dict], note: str | None = None):
  """Training (a line: logged every period) and validation (points: only
  where it was measured) loss and accuracy against step; `note` under it."""
  figure, axes = plt.subplots(
    1, len(CURVES), figsize=(10, 4.4 if note else 4), layout='constrained'
  )
  for ax, (title, series) in zip(axes, CURVES.items(), strict=True):
    for key, label in series:
      points = [(r['step'], r[key]) for r in records if key in r]
      if points:
        steps, values = zip(*points, strict=True)
        style = dict(marker='o', linestyle='none') if key.startswith('val')\
          else dict(linestyle='-')  # fmt: skip
        ax.plot(steps, values, label=label, **style)
    ax.set_xlabel('step')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend()
  if note:
    figure.get_layout_engine().set(h_pad=0.1)
    figure.supxlabel(note, fontsize=8, wrap=True)
  return figure


def plot_curves(records: list[dict], path: str, note: str | None = None):
  return _save(curves_figure(records, note), path)


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
  from sklearn import metrics as sk_metrics

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


def image_grid_figure(
  images_rgb: list[np.ndarray],
  captions: list[str],
  *,
  heading: str,
  colorbar_label: str | None = None,
  columns: int = 4,
):
  """Images in a grid, each with its caption (one or more lines) under it,
  under a heading; with `colorbar_label`, a bar for HEATMAP_CMAP's 0..1
  (see overlay_heatmap). The photos fill the figure: its size follows
  theirs."""
  columns = max(1, min(columns, len(images_rgb)))
  rows = max(1, -(-len(images_rgb) // columns))
  lines = max((c.count('\n') + 1 for c in captions), default=1)
  cell = 2.6  # Inches a photo.
  width = columns * cell + (1.2 if colorbar_label else 0.2)
  height = rows * (cell + 0.16 * lines + 0.1) + 0.5
  figure = plt.figure(figsize=(width, height), layout='constrained')
  axes = figure.subplots(rows, columns, squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for ax, image, caption in zip(axes.flat, images_rgb, captions, strict=False):
    ax.set_axis_on()
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
      spine.set_visible(False)
    ax.set_xlabel(caption, fontsize=8, linespacing=1.3)
  figure.suptitle(heading)
  if colorbar_label:
    mappable = plt.cm.ScalarMappable(cmap=HEATMAP_CMAP)
    figure.colorbar(mappable, ax=axes, shrink=0.6, label=colorbar_label)
  return figure


def plot_image_grid(images_rgb, captions, path: str, **kwargs) -> str:
  """`image_grid_figure`, saved to `path`."""
  return _save(image_grid_figure(images_rgb, captions, **kwargs), path)


def short_name(path: str, width: int = 34) -> str:
  """A file's name, its folder kept where it fits, shortened in the middle."""
  name = '/'.join(path.replace('\\', '/').split('/')[-2:])
  if len(name) <= width:
    return name
  half = (width - 1) // 2
  return f'{name[:half]}…{name[-half:]}'


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
