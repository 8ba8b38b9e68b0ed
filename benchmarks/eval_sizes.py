"""A trained run at other evaluation sizes, with its BatchNorm statistics as
trained and recalibrated at each size (FixRes), and a temperature fitted on
validation for each: on its own splits and on a labelled folder of another
collection.

  python benchmarks/eval_sizes.py --workdir=/tmp/quick_cpu \
    --sizes=160,192 --recalibrate_bn_batches=50 \
    --images=../shared/data/oxford-pets-sample

Restores the workdir's best checkpoint (as predict does), re-splits its data
the way training did, and for each size evaluates validation, --splits and
--images twice: with the checkpoint's statistics, then with them recomputed
at that size (`train.recalibrate_batch_norm`, what `recalibrate_bn_batches`
does at the end of training). For each variant a temperature is fitted on
validation (what `eval.temperature_scaling` does) and every set's log-loss
and calibration error are also given divided by it. One JSON line per size
and variant.
"""

import json

from absl import app
from absl import flags

from catdog_jax import mesh
from catdog_jax import train
from catdog_jax.data import dataset
from catdog_jax.data import sources
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import calibration
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import predict

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A trained run.', required=True)
flags.DEFINE_list('sizes', ['160', '176', '192'], 'Evaluation sizes.')
flags.DEFINE_integer(
  'recalibrate_bn_batches', 50, 'Training batches to recompute them on.'
)
flags.DEFINE_list('splits', [], 'Splits to evaluate beside validation.')
flags.DEFINE_string(
  'images', None, 'A labelled folder of another collection to evaluate too.'
)


def figures(predictions, temperature: float) -> dict:
  """A set's metrics, and its log-loss and calibration error divided by
  `temperature`."""
  metrics = predictions.metrics()
  calibrated = predictions.scaled(temperature).metrics()
  return {
    'accuracy': metrics['accuracy'],
    'recall_per_class': metrics['recall_per_class'],
    'log_loss': metrics['log_loss'],
    'calibration_error': metrics['calibration_error'],
    'calibrated_log_loss': calibrated['log_loss'],
    'calibrated_calibration_error': calibrated['calibration_error'],
  }


def folder_examples(config, root: str):
  """(examples, source) of a labelled folder, indexed as eval does."""
  data = config.data.copy_and_resolve_references()
  data.source, data.root = 'folder', root
  source = sources.create_source(data)
  return dataset.build_index(source, data).examples, source


def main(argv):
  del argv
  predictor = predict.Predictor(FLAGS.workdir)
  config = predictor.config
  if 'batch_stats' not in predictor.variables:
    raise UsageError(
      f'{FLAGS.workdir}: model {config.model.name!r} has no BatchNorm '
      'statistics to recalibrate'
    )
  source, splits, _ = dataset.load_splits(config.data, None)
  sets = {name: (splits[name], source) for name in ['val', *FLAGS.splits]}
  if FLAGS.images:
    sets['images'] = folder_examples(config, FLAGS.images)
  data_sharding, replicated = mesh.create_shardings()
  for size in map(int, FLAGS.sizes):
    config.data.image_size = size
    config.eval.recalibrate_bn_batches = FLAGS.recalibrate_bn_batches
    eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
    variants = {
      'as_trained': predictor.variables,
      'recalibrated': train.recalibrate_batch_norm(
        predictor.apply_fn, predictor.variables, splits['train'], source,
        config,
      ),
    }  # fmt: skip
    for name, variables in variants.items():
      predictions = {
        set_name: evaluate.evaluate(
          eval_fn, variables, examples, set_source, config, data_sharding
        )
        for set_name, (examples, set_source) in sets.items()
      }
      val = predictions['val']
      temperature = calibration.fit_temperature(val.labels, val.logits)
      row = {
        'size': size,
        'statistics': name,
        'step': predictor.step,
        'temperature': temperature,
      }
      for set_name, set_predictions in predictions.items():
        row[set_name] = figures(set_predictions, temperature)
      print(json.dumps(row), flush=True)


if __name__ == '__main__':
  app.run(main)
