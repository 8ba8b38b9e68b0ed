"""Command-line entry point: flags only.

This file is kept short on purpose: the logic lives in `catdog_jax`, where
tests and notebooks can import it.

  python main.py --config=configs/base.py --workdir=DIR \
    --config.data.root=PATH          # train, evaluate, checkpoint
  python main.py --mode=summary --config=configs/base.py
  python main.py --mode=audit --config=configs/base.py --workdir=DIR \
    --config.data.root=PATH          # data_report.json
  python main.py --mode=predict --workdir=DIR --images=PATH [--output=CSV]
  python main.py --mode=eval --workdir=DIR --images=FOLDER [--output=JSON]
  python main.py --mode=report --workdir=DIR
"""

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from catdog_jax import audit
from catdog_jax import distributed
from catdog_jax import models
from catdog_jax import predict
from catdog_jax import train
from catdog_jax import workdir as workdir_lib
from catdog_jax.errors import CatdogError
from catdog_jax.errors import UsageError

FLAGS = flags.FLAGS

flags.DEFINE_string('workdir', None, 'Where checkpoints and reports go.')
flags.DEFINE_enum(
  'mode',
  'train',
  ['train', 'summary', 'audit', 'predict', 'eval', 'report'],
  'train: train, evaluate, checkpoint. summary: the model table. audit: '
  'index, check and de-duplicate the data, write data_report.json. '
  'predict: dog probabilities of --images. eval: metrics on the labelled '
  'folder --images. report: redraw WORKDIR/report.md and plots/.',
)
flags.DEFINE_string(
  'images', None, 'predict: a file, folder or glob; eval: a labelled folder.'
)
flags.DEFINE_string(
  'output', None, 'predict: CSV to write; eval: JSON to write.'
)
flags.DEFINE_string(
  'coordinator_address', None, 'Multi-host: HOST:PORT of process 0.'
)
flags.DEFINE_integer('num_processes', None, 'Multi-host: how many processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process, from 0.')
config_flags.DEFINE_config_file(
  'config', None, 'Training configuration file.', lock_config=True
)


def quiet_orbax_info_logs() -> None:
  """Keeps orbax's dozen INFO lines per checkpoint out of the training log."""
  orbax_dir = f'{os.sep}orbax{os.sep}'

  def keep(record) -> bool:
    return record.levelno >= logging.WARNING or orbax_dir not in record.pathname

  logging.get_absl_handler().python_handler.addFilter(keep)


def run_summary():
  config = required_config()
  model = models.create_model(config.model)
  print(models.format_summary(models.summarize(model, config.data.image_size)))


def run_train():
  train.train_and_evaluate(required_config(), FLAGS.workdir)


def run_audit():
  report = audit.run_audit(required_config().data, FLAGS.workdir)
  print(audit.format_audit(report))


def run_predict():
  rows, skipped = predict.predict(FLAGS.workdir, required_images())
  output = FLAGS.output or os.path.join(FLAGS.workdir, 'predictions.csv')
  predict.write_predictions_csv(rows, output)
  print(predict.format_predictions(rows, skipped))
  print(f'Wrote {output}')


def run_eval():
  result, report_text = predict.evaluate_folder(
    FLAGS.workdir, required_images()
  )
  output = FLAGS.output or os.path.join(FLAGS.workdir, 'eval_folder.json')
  workdir_lib.write_json(output, result)
  print(report_text)
  print(f'accuracy {result["accuracy"]:.4f}, {result["num_examples"]} images, '
        f'{result["num_skipped"]} skipped.')  # fmt: skip
  if 'duplicates_of_training_data' in result:
    counts = result['duplicates_of_training_data']
    unseen = result['unseen']
    print(f'{counts["train"]} of them are photos of the training split '
          f'(and {counts["val"]} of val, {counts["test"]} of test); '
          f'on the other {unseen["num_examples"]}: accuracy '
          f'{unseen.get("accuracy", float("nan")):.4f}.')  # fmt: skip
  print(f'Wrote {output}')


def run_report():
  print(f'Wrote {predict.regenerate_report(FLAGS.workdir)}')


MODES = {
  'summary': run_summary,
  'train': run_train,
  'audit': run_audit,
  'predict': run_predict,
  'eval': run_eval,
  'report': run_report,
}


def required_config():
  if FLAGS.config is None:
    raise UsageError(f'--config is required for --mode={FLAGS.mode}')
  return FLAGS.config


def required_images() -> str:
  if not FLAGS.images:
    raise UsageError(f'--images is required for --mode={FLAGS.mode}')
  return FLAGS.images


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  quiet_orbax_info_logs()
  distributed.initialize(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
  )
  try:
    if FLAGS.mode != 'summary' and not FLAGS.workdir:
      raise UsageError(f'--workdir is required for --mode={FLAGS.mode}')
    logging.info(
      'JAX process %d of %d, devices: %s',
      jax.process_index(),
      jax.process_count(),
      jax.devices(),
    )
    MODES[FLAGS.mode]()
  except CatdogError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
