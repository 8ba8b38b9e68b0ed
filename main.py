"""Command-line entry point: flags only.

This file is kept short on purpose: the logic lives in `catdog_jax`, where
tests and notebooks can import it.

  python main.py --config=configs/base.py --workdir=DIR \
    --config.data.root=PATH          # train, evaluate, checkpoint
  python main.py --mode=summary --config=configs/base.py
"""

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from catdog_jax import audit
from catdog_jax import models
from catdog_jax import train
from catdog_jax.errors import CatdogError
from catdog_jax.errors import UsageError

FLAGS = flags.FLAGS

flags.DEFINE_string('workdir', None, 'Where checkpoints and reports go.')
flags.DEFINE_enum(
  'mode',
  'train',
  ['train', 'summary', 'audit'],
  'train: train, evaluate, checkpoint. summary: the model table. audit: '
  'index, check and de-duplicate the data, write data_report.json.',
)
config_flags.DEFINE_config_file(
  'config', None, 'Training configuration file.', lock_config=True
)
flags.mark_flags_as_required(['config'])


def quiet_orbax_info_logs() -> None:
  """Keeps orbax's dozen INFO lines per checkpoint out of the training log."""
  orbax_dir = f'{os.sep}orbax{os.sep}'

  def keep(record) -> bool:
    return record.levelno >= logging.WARNING or orbax_dir not in record.pathname

  logging.get_absl_handler().python_handler.addFilter(keep)


def summary(config) -> None:
  model = models.create_model(config.model)
  rows = models.summarize(model, config.data.image_size)
  print(models.format_summary(rows))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  config = FLAGS.config
  quiet_orbax_info_logs()
  try:
    if FLAGS.mode == 'summary':
      summary(config)
      return
    if not FLAGS.workdir:
      raise UsageError(f'--workdir is required for --mode={FLAGS.mode}')
    if FLAGS.mode == 'audit':
      print(audit.format_audit(audit.run_audit(config.data, FLAGS.workdir)))
      return
    logging.info(
      'JAX process %d of %d, devices: %s',
      jax.process_index(),
      jax.process_count(),
      jax.devices(),
    )
    train.train_and_evaluate(config, FLAGS.workdir)
  except CatdogError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
