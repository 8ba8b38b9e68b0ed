"""The human-readable run report: `WORKDIR/report.md` and `WORKDIR/plots/`.

`write_run_report` redraws everything from what the workdir holds (metrics,
predictions, the data report) plus the model, so `--mode=report` and the end
of training share it.
"""

import csv
import os

import numpy as np
from absl import logging

from catdog_jax import checkpointing
from catdog_jax import classes
from catdog_jax import fileio
from catdog_jax import inference
from catdog_jax import metric_writers
from catdog_jax import models
from catdog_jax import workdir as workdir_lib
from catdog_jax.classes import CLASS_NAMES
from catdog_jax.data import augmentation
from catdog_jax.data import input_pipeline
from catdog_jax.evaluation import calibration
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import gradcam
from catdog_jax.evaluation import metrics as metrics_lib
from catdog_jax.evaluation import plots
from catdog_jax.models import pretrained
from catdog_jax.models import summary

GRID_SIZE = 12  # Images in errors.png; gradcam.png shows 4 right, 4 wrong.


def confusion_table(confusion: list[list[int]]) -> str:
  """Markdown confusion matrix: rows are true classes, columns predicted."""
  header = '| true \\ predicted | ' + ' | '.join(CLASS_NAMES) + ' |'
  rule = '|---|' + '---:|' * len(CLASS_NAMES)
  rows = [
    f'| {name} | ' + ' | '.join(str(n) for n in counts) + ' |'
    for name, counts in zip(CLASS_NAMES, confusion, strict=True)
  ]
  return '\n'.join([header, rule, *rows])


def splits_table(splits: dict[str, dict[str, int]]) -> str:
  """Markdown table of images per split and class."""
  header = '| split | ' + ' | '.join(CLASS_NAMES) + ' | total |'
  rule = '|---|' + '---:|' * (len(CLASS_NAMES) + 1)
  rows = [
    f'| {split} | '
    + ' | '.join(str(counts[c]) for c in CLASS_NAMES)
    + f' | {sum(counts.values())} |'
    for split, counts in splits.items()
  ]
  return '\n'.join([header, rule, *rows])


def plots_section(names: list[str]) -> list[str]:
  return [f'![{name}](plots/{name}.png)\n' for name in names]


def run_lines(run: dict, step: int, val_accuracy: dict, best: int | None):
  """Which checkpoint is reported and used later, and how the run ran."""

  def at(s):
    value = val_accuracy.get(s)
    return '' if value is None else f' (val accuracy {value:.4f})'

  tested = f'- Test figures, plots and Grad-CAM: the model after step {step}'
  chosen = 'the best by validation accuracy (else the newest)'
  if best == step:
    lines = [
      f'{tested}{at(step)}, the checkpoint `--mode=predict` and '
      f'`--mode=eval` use: {chosen}.'
    ]
  else:  # Runs before 2026-12-03 tested the last step.
    lines = [
      f'{tested}{at(step)}.',
      f'- `--mode=predict` and `--mode=eval` use checkpoint {best}'
      f'{at(best)}, {chosen}.',
    ]
  if 'command' in run:
    lines.append(f'- Command: `{run["command"]}`')
  if run.get('config_file'):
    overrides = ', '.join(f'`{o}`' for o in run.get('overrides', [])) or 'none'
    lines.append(f'- Config: `{run["config_file"]}`; overrides: {overrides}')
  if 'started_utc' in run:
    resumed = run['resumed_from_step']
    lines += [
      f'- Started {run["started_utc"]} UTC; this launch took '
      f'{run["wall_seconds"] / 60:.1f} min'
      + (f' (resumed from step {resumed})' if resumed else '')
      + '.',
      f'- Hardware: {run["devices"]} ({run["processor"]}, host '
      f'{run["host"]}), JAX {run["jax"]}.',
    ]
  return lines


def render_report(
  test_metrics,
  classification_report,
  data_report,
  step,
  summary,
  plot_names,
  run_section: list[str],
):
  """The report as Markdown text."""
  auc = test_metrics['roc_auc']
  return '\n'.join(
    [
      '# catdog-jax run report',
      '',
      f'Model after {step} training steps, evaluated on the test split '
      f'({test_metrics["num_examples"]} images it never trained on).',
      '',
      '## Run',
      '',
      *run_section,
      '',
      '## Test metrics (dog = positive class)',
      '',
      f'- accuracy: {test_metrics["accuracy"]:.4f}',
      f'- precision: {test_metrics["precision"]:.4f}',
      f'- recall: {test_metrics["recall"]:.4f}',
      f'- F1: {test_metrics["f1"]:.4f}',
      f'- ROC AUC: {"n/a" if auc is None else f"{auc:.4f}"}',
      f'- log-loss: {test_metrics["log_loss"]:.4f}',
      f'- expected calibration error: {test_metrics["calibration_error"]:.4f}',
      '',
      '## Classification report',
      '',
      '```',
      classification_report.rstrip(),
      '```',
      '',
      '## Confusion matrix',
      '',
      confusion_table(test_metrics['confusion_matrix']),
      '',
      '## Plots',
      '',
      *plots_section(plot_names),
      '## Model',
      '',
      '```',
      summary,
      '```',
      '',
      '## Data',
      '',
      f'{data_report["num_files"]} image files in `{data_report["root"]}`: '
      f'{data_report["num_used"]} used, {len(data_report["skipped"])} skipped '
      f'(reasons in data_report.json); '
      f'{data_report["num_exact_duplicate_groups"]} exact and '
      f'{data_report["num_near_duplicate_groups"]} near-duplicate groups, each '
      'kept in one split. Split by ' + data_report['split_rule'] + '.',
      '',
      splits_table(data_report['splits']),
      '',
    ]
  )


# The columns of every predictions CSV: predict's (without `true`) and the
# test split's; classes by name.
PREDICTION_COLUMNS = ('true', 'path', 'predicted', 'prob_dog', 'logit')


def prediction_row(path: str, logit: float, label: int | None = None) -> dict:
  """One image's row of a predictions CSV."""
  row = {} if label is None else {'true': CLASS_NAMES[int(label)]}
  return row | {
    'path': path,
    'predicted': classes.class_name(logit),
    'prob_dog': float(metrics_lib.sigmoid(logit)),
    'logit': float(logit),
  }


def write_predictions(workdir, predictions: evaluate.Predictions) -> None:
  """The test split's predictions, one row per image."""
  path = workdir_lib.path(workdir, workdir_lib.PREDICTIONS_TEST)
  rows = zip(
    predictions.examples, predictions.labels, predictions.logits, strict=True
  )
  with fileio.atomic_write(path) as f:
    writer = csv.DictWriter(f, fieldnames=PREDICTION_COLUMNS)
    writer.writeheader()
    writer.writerows(
      prediction_row(example.key, logit, label)
      for example, label, logit in rows
    )


def read_predictions(workdir):
  """(keys, labels, logits) as `write_predictions` wrote them (also as
  versions before the shared columns did: key, label 0/1, logit)."""
  with open(
    workdir_lib.path(workdir, workdir_lib.PREDICTIONS_TEST), newline=''
  ) as f:
    rows = list(csv.DictReader(f))
  if rows and 'key' in rows[0]:
    keys = [row['key'] for row in rows]
    labels = np.array([int(row['label']) for row in rows])
  else:
    keys = [row['path'] for row in rows]
    labels = np.array([CLASS_NAMES.index(row['true']) for row in rows])
  logits = np.array([float(row['logit']) for row in rows])
  return keys, labels, logits


def test_figures(workdir, labels, logits) -> dict:
  """eval_test.json's figures; those it lacks (written by older code, such
  as the calibration error before 2026-11-29) derived from the test
  predictions it was computed from."""
  recorded = fileio.read_json(workdir_lib.path(workdir, workdir_lib.EVAL_TEST))
  derived = metrics_lib.classification_metrics(labels, logits)
  return derived | recorded


def load_images(source, keys, image_size) -> np.ndarray:
  """The images as evaluation sees them: decoded, resized, uint8."""
  return np.stack(
    [input_pipeline.load_image(source, key, image_size) for key in keys]
  )


def caption(key: str, label: int, logit: float, verdict: str = '') -> str:
  """'WRONG: true cat, p(dog)=0.92' over the file's name."""
  prob = float(metrics_lib.sigmoid(logit))
  return (
    f'{verdict}true {CLASS_NAMES[label]}, p(dog)={prob:.2f}\n'
    f'{plots.short_name(key)}'
  )


def curves_note(config) -> str | None:
  """Why training loss sits above validation loss, when something makes it
  (smoothed targets, augmented images), for the curves' figure."""
  reasons = []
  if config.label_smoothing:
    reasons.append(f'targets smoothed by {config.label_smoothing:g}')
  if augmentation.is_enabled(config.augment) or config.augment.cutmix:
    reasons.append('augmented images')
  if not reasons:
    return None
  return (
    f'Training loss and accuracy are measured on {" and ".join(reasons)}, '
    'averaged over each log period; validation on plain images, so its '
    'loss sits lower.'
  )


def draw_plots(workdir, config, variables, source, records) -> list[str]:
  """Every figure under workdir/plots/; returns their names.

  `variables` are the model's evaluated weights and statistics; `records`
  the run's metrics.jsonl lines.
  """
  out = workdir_lib.path(workdir, workdir_lib.PLOTS)
  os.makedirs(out, exist_ok=True)
  keys, labels, logits = read_predictions(workdir)
  test = fileio.read_json(workdir_lib.path(workdir, workdir_lib.EVAL_TEST))
  plots.plot_curves(
    records, os.path.join(out, 'curves.png'), curves_note(config)
  )
  plots.plot_confusion_matrix(
    test['confusion_matrix'], os.path.join(out, 'confusion_matrix.png')
  )
  names = ['curves', 'confusion_matrix']
  if len(np.unique(labels)) == 2:
    plots.plot_roc(labels, logits, os.path.join(out, 'roc.png'))
    names.append('roc')

  size = config.data.image_size
  worst = np.argsort(-metrics_lib.example_losses(labels, logits))[:GRID_SIZE]
  plots.plot_image_grid(
    list(load_images(source, [keys[i] for i in worst], size)),
    [caption(keys[i], labels[i], logits[i]) for i in worst],
    os.path.join(out, 'errors.png'),
    heading=f'The {len(worst)} test images with the highest loss',
  )
  names.append('errors')

  right = classes.is_dog(logits) == (labels == 1)
  confident = np.argsort(-np.abs(logits))
  chosen = [i for i in confident if right[i]][:4]
  chosen += [i for i in worst if not right[i]][:4]
  model = inference.create_model(config)
  layer = gradcam.last_pooling_layer(model, size)
  if layer is None:  # A ViT: no feature map before a pooling layer.
    logging.info('No Grad-CAM: the model has no pooling layer.')
    return names
  batch = load_images(source, [keys[i] for i in chosen], size)
  heatmaps = gradcam.gradcam(model.apply, variables, batch, layer)
  plots.plot_image_grid(
    [plots.overlay_heatmap(i, h) for i, h in zip(batch, heatmaps, strict=True)],
    [
      caption(
        keys[i], labels[i], logits[i], 'right: ' if right[i] else 'WRONG: '
      )
      for i in chosen
    ],  # fmt: skip
    os.path.join(out, 'gradcam.png'),
    heading='Grad-CAM: where the evidence for the predicted class lies',
    colorbar_label="evidence (relative to the image's strongest)",
  )
  names.append('gradcam')
  return names


def write_run_report(workdir, config, variables, source, step) -> str:
  """Redraws the plots and writes `workdir/report.md`; returns its path."""
  records = metric_writers.read_jsonl(
    workdir_lib.path(workdir, workdir_lib.METRICS)
  )
  try:
    plot_names = draw_plots(workdir, config, variables, source, records)
  except OSError as e:
    if fileio.is_disk_full(e):
      plots_dir = workdir_lib.path(workdir, workdir_lib.PLOTS)
      raise fileio.disk_full('the plots', plots_dir) from e
    raise
  _, labels, logits = read_predictions(workdir)
  model = models.create_model(config.model)
  run_path = workdir_lib.path(workdir, workdir_lib.RUN)
  val_accuracy = {r['step']: r['val_accuracy'] for r in records
                  if 'val_accuracy' in r}  # fmt: skip
  run_section = run_lines(
    fileio.read_json(run_path) if os.path.exists(run_path) else {},
    step,
    val_accuracy,
    checkpointing.inference_step(workdir),
  )
  if source := pretrained.describe_source(config.model):
    fresh = ', '.join(f'`{r}`' for r in config.model.dont_load)
    run_section.append(
      f'- Initialised from {source}; fresh: {fresh or "nothing"}.'
    )
  if config.optimizer.freeze:
    run_section.append(f'- Frozen parameters: `{config.optimizer.freeze}`.')
  if fit := calibration.read_fits(workdir).get(step):
    run_section.append(
      f'- Logits of step {step} divided by the {calibration.describe(fit)}; '
      'the test figures are calibrated.'
    )
  text = render_report(
    test_figures(workdir, labels, logits),
    metrics_lib.classification_report(labels, logits),
    fileio.read_json(workdir_lib.path(workdir, workdir_lib.DATA_REPORT)),
    step,
    summary.format_summary(summary.summarize(model, config.data.image_size)),
    plot_names,
    run_section,
  )
  path = workdir_lib.path(workdir, workdir_lib.REPORT)
  with fileio.atomic_write(path) as f:
    f.write(text)
  return path
