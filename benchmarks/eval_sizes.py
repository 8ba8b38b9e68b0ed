"""A trained run's validation accuracy at other evaluation sizes, with its
BatchNorm statistics as trained and recalibrated at each size (FixRes).

  python benchmarks/eval_sizes.py --workdir=/tmp/quick_cpu \
    --sizes=160,176,192 --recalibrate_bn_batches=50

Restores the workdir's best checkpoint (as predict does), re-splits its data
the way training did, and for each size evaluates the validation split
twice: with the checkpoint's statistics, then with them recomputed at that
size (`train.recalibrate_batch_norm`, what `recalibrate_bn_batches` does at
the end of training). One JSON line per size and variant.
"""

import json

from absl import app
from absl import flags

from catdog_jax import mesh
from catdog_jax import train
from catdog_jax.data import dataset
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import predict

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A trained run.', required=True)
flags.DEFINE_list('sizes', ['160', '176', '192'], 'Evaluation sizes.')
flags.DEFINE_integer(
  'recalibrate_bn_batches', 50, 'Training batches to recompute them on.'
)
flags.DEFINE_string('split', 'val', 'The split to evaluate.')


def main(argv):
  del argv
  predictor = predict.Predictor(FLAGS.workdir)
  config = predictor.config
  if not predictor.state.batch_stats:
    raise UsageError(
      f'{FLAGS.workdir}: model {config.model.name!r} has no BatchNorm '
      'statistics to recalibrate'
    )
  source, splits, _ = dataset.load_splits(config.data, None)
  data_sharding, replicated = mesh.create_shardings()
  for size in map(int, FLAGS.sizes):
    config.data.image_size = size
    config.eval.recalibrate_bn_batches = FLAGS.recalibrate_bn_batches
    eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
    states = {
      'as_trained': predictor.state,
      'recalibrated': train.recalibrate_batch_norm(
        predictor.state, splits['train'], source, config
      ),
    }
    for name, state in states.items():
      result = evaluate.evaluate(
        eval_fn, state, splits[FLAGS.split], source, config, data_sharding
      ).metrics()
      print(
        json.dumps(
          {
            'size': size,
            'statistics': name,
            'step': predictor.step,
            f'{FLAGS.split}_accuracy': result['accuracy'],
            f'{FLAGS.split}_log_loss': result['log_loss'],
          }
        ),
        flush=True,
      )


if __name__ == '__main__':
  app.run(main)
