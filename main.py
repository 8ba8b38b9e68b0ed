"""Command-line entry point: flags only.

This file is kept short on purpose: the logic lives in `catdog_jax` (each
mode is one library call, `cli.run_mode`), where tests and notebooks can
import it. README.md has the commands.
"""

import sys

from catdog_jax import allocator

if __name__ == '__main__':
  # Before anything else is imported or allocated (catdog_jax/allocator.py).
  allocator.reexec_with_mimalloc()

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from catdog_jax import cli
from catdog_jax import distributed
from catdog_jax.errors import CatdogError

FLAGS = flags.FLAGS
flags.DEFINE_enum(
  'mode', 'train', list(cli.MODES),
  '; '.join(f'{mode}: {what}' for mode, (_, what) in cli.MODES.items()),
)  # fmt: skip
flags.DEFINE_string('workdir', None, 'Where checkpoints and reports go.')
flags.DEFINE_multi_string(
  'images', None, 'predict: files, folders or globs (repeatable; more photos '
  'may follow as arguments); eval: one labelled folder.',
)  # fmt: skip
flags.DEFINE_string(
  'output', None, 'predict: CSV to write; eval: JSON; export: a folder.'
)
flags.DEFINE_integer('port', 7860, 'serve: the port of the page on 127.0.0.1.')
flags.DEFINE_string('coordinator_address', None, 'Multi-host: process 0.')
flags.DEFINE_integer('num_processes', None, 'Multi-host: how many processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process, from 0.')
CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Training configuration file.', lock_config=True
)


def main(argv):
  if distributed.is_multi_process(FLAGS.coordinator_address):
    # None in the supervised child.
    status = distributed.supervise(FLAGS.num_processes)
    if status is not None:
      sys.exit(status)
  cli.start_process()
  distributed.initialize(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
  )
  logging.info('JAX process %d of %d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())  # fmt: skip
  try:
    cli.run_mode(
      FLAGS.mode,
      config=CONFIG.value,
      workdir=FLAGS.workdir,
      images=cli.images_argument(FLAGS.mode, FLAGS.images, argv[1:]),
      output=FLAGS.output,
      port=FLAGS.port,
      provenance=cli.provenance(CONFIG) if FLAGS.mode == 'train' else None,
    )
  except CatdogError as e:
    sys.exit(f'error: {e}')
  except jax.errors.JaxRuntimeError as e:
    if not distributed.is_peer_loss(e):
      raise
    distributed.exit_for_lost_peer(e)
  except KeyboardInterrupt:
    # Training's loop saves on the first Ctrl-C; this is any other moment,
    # or a second Ctrl-C. Checkpoints already written are whole.
    print('error: interrupted; relaunch the same command to resume from '
          'the last checkpoint', file=sys.stderr)  # fmt: skip
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
