"""Using a trained workdir: predict new images, evaluate labelled folders.

Both read the config saved in the workdir and restore its best checkpoint
(by validation accuracy), else its newest; both preprocess exactly as
training's evaluation does, through `evaluate.evaluate`.
"""

import csv
import glob
import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from catdog_jax import checkpointing
from catdog_jax import fileio
from catdog_jax import inference
from catdog_jax import mesh
from catdog_jax import metric_writers
from catdog_jax import text
from catdog_jax import workdir as workdir_lib
from catdog_jax.data import dataset
from catdog_jax.data import input_pipeline
from catdog_jax.data import sources
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import calibration
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import metrics as metrics_lib
from catdog_jax.evaluation import report


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config `workdir` trained with, in today's shape."""
  return ml_collections.ConfigDict(workdir_lib.read_config(workdir))


def find_images(patterns: str | Sequence[str]) -> list[str]:
  """Image files named by files, folders (searched recursively) or globs.

  Raises:
    UsageError: naming the patterns that match no file.
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  found, unmatched = set(), []
  for pattern in patterns:
    if os.path.isdir(pattern):
      matches = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(pattern)
        for name in names
        if sources.is_image_file(name)
      ]
    elif os.path.isfile(pattern):
      matches = [pattern]
    else:
      matches = [p for p in glob.glob(pattern, recursive=True)
                 if os.path.isfile(p)]  # fmt: skip
    if not matches:
      unmatched.append(pattern)
    found.update(os.path.abspath(p) for p in matches)
  if unmatched:
    listed = ', '.join(repr(p) for p in unmatched)
    raise UsageError(
      f'no image files match {listed}: give a file, a folder or a glob in '
      "quotes (--images='photos/*.jpg'); --images may be repeated"
    )
  return sorted(found)


class Predictor:
  """A restored model and its compiled evaluation step, its logits divided
  by the checkpoint's fitted temperature (1.0 where none was fitted).

  Attributes:
    config: the run's config, in today's shape.
    step: the restored checkpoint's step.
    apply_fn: the model's apply function.
    variables: its evaluated weights and statistics
      (`inference.restore_variables`: no optimizer state).
    temperature: the checkpoint's fitted temperature.
    eval_fn: `evaluate.compile_eval_step`'s function, with that temperature.
  """

  def __init__(self, workdir: str, step: int | None = None):
    """Restores checkpoint `step` of `workdir`, else its best, else newest."""
    self.config = load_config(workdir)
    if step is None and checkpointing.inference_step(workdir) is None:
      raise UsageError(no_checkpoint_yet(workdir, self.config))
    self._data_sharding, replicated = mesh.create_shardings()
    self.apply_fn = inference.create_model(self.config).apply
    self.variables, self.step = inference.restore_variables(
      workdir, self.config, replicated, step
    )
    self.temperature = calibration.read_temperature(workdir, self.step)
    self.eval_fn = evaluate.compile_eval_step(
      self.config, self._data_sharding, replicated, self.temperature
    )

  def predict(self, examples, source) -> evaluate.Predictions:
    """The examples' logits, as training's evaluation computes them."""
    return evaluate.evaluate(
      self.eval_fn, self.variables, examples, source, self.config,
      self._data_sharding,
    )  # fmt: skip


def no_checkpoint_yet(workdir: str, config) -> str:
  """Why `workdir` has no checkpoint to predict with: a run in progress
  (where it is, and when its first checkpoint comes) or none at all."""
  records = metric_writers.read_jsonl(
    workdir_lib.path(workdir, workdir_lib.METRICS)
  )
  if not records:
    return f'no checkpoints in {workdir!r}: train there first'
  report_path = workdir_lib.path(workdir, workdir_lib.DATA_REPORT)
  total = ''
  if os.path.exists(report_path):
    num_train = sum(fileio.read_json(report_path)['splits']['train'].values())
    total = f' of {input_pipeline.num_train_steps(config, num_train)}'
  return (
    f'{workdir!r} has no checkpoint yet: its run is at step '
    f'{records[-1]["step"]}{total}, and its first checkpoint comes at step '
    f'{config.checkpoint_every_steps} (checkpoint_every_steps); predict and '
    'eval work from then on'
  )


def predict(
  workdir: str, patterns: str | Sequence[str]
) -> tuple[list[dict], list[dict]]:
  """Dog probabilities of the images `patterns` name (`find_images`).

  Returns:
    Rows {'path', 'prob_dog', 'label'} for usable images, and
    {'path', 'reason'} for skipped ones.
  """
  predictor = Predictor(workdir)
  source = sources.FilesSource(find_images(patterns))
  # The same checks as indexing; no cache: these files are seen once.
  paths = source.list_keys()[0]
  records = dataset.inspect_all(source, paths, predictor.config.data, None)
  keys, skipped = dataset.usable_and_skipped(paths, records)
  logging.info('Predicting %d images (%d skipped).', len(keys), len(skipped))
  if not keys:
    return [], skipped  # Their reasons are what there is to say.
  examples = [dataset.Example(key, 0, '') for key in keys]
  predictions = predictor.predict(examples, source)
  rows = [
    report.prediction_row(example.key, logit)
    for example, logit in zip(
      predictions.examples, predictions.logits, strict=True
    )
  ]
  return rows, skipped


def predict_to_csv(
  workdir: str, patterns: Sequence[str], output: str | None
) -> str:
  """--mode=predict: writes the CSV (default: the workdir's predictions.csv)
  and returns what to print."""
  output = output or workdir_lib.path(workdir, workdir_lib.PREDICTIONS)
  rows, skipped = predict(workdir, patterns)
  write_predictions_csv(rows, output)
  return f'{format_predictions(rows, skipped)}\nWrote {output}'


def evaluate_to_json(workdir: str, root: str, output: str | None) -> str:
  """--mode=eval: writes the metrics (default: the workdir's
  eval_folder.json) and returns what to print."""
  output = output or workdir_lib.path(workdir, workdir_lib.EVAL_FOLDER)
  result, report_text = evaluate_folder(workdir, root)
  fileio.write_json(output, result)
  return f'{format_eval(result, report_text)}\nWrote {output}'


def write_predictions_csv(rows: list[dict], path: str) -> None:
  with fileio.atomic_write(path) as f:
    writer = csv.DictWriter(f, fieldnames=report.PREDICTION_COLUMNS[1:])
    writer.writeheader()
    writer.writerows(rows)


def format_predictions(rows, skipped, limit: int = 20) -> str:
  """A short table of predictions, then the skipped files and why."""
  lines = [f'{"prob_dog":>8}  predicted  path']
  lines += [f'{r["prob_dog"]:8.4f}  {r["predicted"]:9}  {r["path"]}'
            for r in rows[:limit]]  # fmt: skip
  if len(rows) > limit:
    lines.append(f'... and {len(rows) - limit} more')
  dogs = sum(r['predicted'] == 'dog' for r in rows)
  lines.append(
    f'{text.counted(len(rows), "image")}: {text.counted(dogs, "dog")}, '
    f'{text.counted(len(rows) - dogs, "cat")}; {len(skipped)} skipped.'
  )
  lines += [f'  skipped {s["path"]}: {s["reason"]}' for s in skipped]
  return '\n'.join(lines)


def training_duplicates(
  workdir: str, config: ml_collections.ConfigDict, records: dict[str, dict]
) -> dict[str, str] | None:
  """Split (train/val/test) of the training photo each image duplicates.

  Keys of `records` that duplicate none are absent. None, with a warning,
  when the training data (`config`, the `data` config the workdir trained
  on) cannot be opened here.
  """
  cache = workdir_lib.path(workdir, workdir_lib.INDEX_CACHE)
  try:
    _, index, splits = dataset.index_and_splits(config, cache)
  except (UsageError, OSError) as e:
    logging.warning('Cannot compare with the training data: %s', e)
    return None
  split_of = {e.key: name for name, split in splits.items() for e in split}
  reference = {key: index.records[key] for key in split_of}
  found = dataset.duplicates_of(reference, records, config.near_duplicate_bits)
  return {key: split_of[ref] for key, ref in found.items()}


def evaluate_folder(workdir: str, root: str) -> tuple[dict, str]:
  """Metrics of the workdir's model on every usable image of a labelled folder.

  Images that duplicate photos of the training split (the same photo at
  another size counts) say little about generalisation, so they are counted
  and the metrics are repeated without them under 'unseen'.

  Returns:
    (metrics as in eval_test.json plus num_skipped, skipped,
    duplicates_of_training_data and unseen; the classification report).
  """
  if not os.path.isdir(root):
    raise UsageError(f'--images {root!r} is not a folder')
  predictor = Predictor(workdir)
  config = predictor.config.data.copy_and_resolve_references()
  config.source, config.root = 'folder', root
  source = sources.create_source(config)
  index = dataset.build_index(source, config)
  if not index.examples:
    raise UsageError(
      f'no labelled images in {root!r}: eval needs cat and dog folders '
      '(or cat.N.jpg / dog.N.jpg names); --mode=predict takes unlabelled ones'
    )
  predictions = predictor.predict(index.examples, source)
  result = predictions.metrics()
  result['root'] = os.path.abspath(root)
  result['num_skipped'] = len(index.skipped)
  result['skipped'] = index.skipped
  result['checkpoint_step'] = predictor.step
  seen = training_duplicates(workdir, predictor.config.data, index.records)
  if seen is not None:
    result['duplicates_of_training_data'] = {
      split: sum(s == split for s in seen.values()) for split in dataset.SPLITS
    }
    unseen = np.array(
      [seen.get(e.key) != 'train' for e in predictions.examples]
    )
    result['unseen'] = (
      metrics_lib.classification_metrics(
        predictions.labels[unseen], predictions.logits[unseen]
      )
      if unseen.any()
      else {'num_examples': 0}
    )
  return result, predictions.report()


def format_eval(result: dict, report_text: str) -> str:
  """What --mode=eval prints: the classification report, the metrics, and
  how many of the images the model trained on."""
  auc = result['roc_auc']
  lines = [
    report_text.rstrip(),
    f'{text.counted(result["num_examples"], "image")} '
    f'({result["num_skipped"]} skipped): accuracy {result["accuracy"]:.4f}, '
    f'precision {result["precision"]:.4f}, recall {result["recall"]:.4f}, '
    f'F1 {result["f1"]:.4f}, ROC AUC '
    f'{"n/a" if auc is None else f"{auc:.4f}"}, log-loss '
    f'{result["log_loss"]:.4f}, calibration error '
    f'{result["calibration_error"]:.4f}; recall per class: '
    + ', '.join(
      f'{name} {recall:.4f}'
      for name, recall in result['recall_per_class'].items()
    )
    + '.',
  ]
  if 'duplicates_of_training_data' in result:
    counts, unseen = result['duplicates_of_training_data'], result['unseen']
    lines.append(
      f'{counts["train"]} of them are photos of the training split (and '
      f'{counts["val"]} of val, {counts["test"]} of test); on the other '
      f'{unseen["num_examples"]}: accuracy '
      f'{unseen.get("accuracy", float("nan")):.4f}.'
    )
  return '\n'.join(lines)


def regenerate_report(workdir: str) -> str:
  """Redraws report.md and plots/ for the model the test split measured."""
  step = fileio.read_json(workdir_lib.path(workdir, workdir_lib.EVAL_TEST))[
    'step'
  ]
  predictor = Predictor(workdir, step)
  config = predictor.config
  source = sources.create_source(config.data)
  return report.write_run_report(
    workdir, config, predictor.variables, source, step
  )
