"""Command-line entry point: flags only.

This file is kept short on purpose: the logic lives in `catdog_jax`, where
tests and notebooks can import it.

  python main.py --config=configs/base.py --workdir=DIR \
    [--config.data.root=PATH]        # train, evaluate, checkpoint
  (no data.root: Microsoft's PetImages, downloaded the first time)
  python main.py --mode=summary --config=configs/base.py
  python main.py --mode=audit --config=configs/base.py --workdir=DIR \
    [--config.data.root=PATH]        # data_report.json
  python main.py --mode=predict --workdir=DIR --images=PATH [--output=CSV]
  python main.py --mode=eval --workdir=DIR --images=FOLDER [--output=JSON]
  python main.py --mode=report --workdir=DIR
"""

import os
import shlex
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
from catdog_jax import probe
from catdog_jax import train
from catdog_jax import workdir as workdir_lib
from catdog_jax.errors import CatdogError
from catdog_jax.errors import UsageError

FLAGS = flags.FLAGS
PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))

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


def keep_own_info_logs() -> None:
  """INFO lines from this project only; warnings and errors from anyone.

  Without it, orbax writes a dozen INFO lines per checkpoint and JAX one
  about each backend it could not start (libtpu on every CPU machine).
  """
  installed = f'{os.sep}site-packages{os.sep}'  # A virtualenv in the repo.

  def keep(record) -> bool:
    # Python's level numbers: absl's own logging.WARNING is -1.
    return record.levelno >= logging.converter.STANDARD_WARNING or (
      record.pathname.startswith(PROJECT_DIR + os.sep)
      and installed not in record.pathname
    )

  # On absl's handler itself: it calls its inner handler's emit(), which
  # skips that handler's filters.
  logging.get_absl_handler().addFilter(keep)


def run_summary():
  config = required_config()
  model = models.create_model(config.model)
  print(models.format_summary(models.summarize(model, config.data.image_size)))


def run_train():
  provenance = {
    'command': shlex.join([os.path.basename(sys.executable), *sys.argv]),
    'config_file': config_flags.get_config_filename(FLAGS['config']),
    'overrides': [
      f'{key}={value}'
      for key, value in config_flags.get_override_values(
        FLAGS['config']
      ).items()
    ],
  }
  config = required_config()
  run = probe.probe_and_evaluate if config.probe else train.train_and_evaluate
  run(config, FLAGS.workdir, provenance)


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


def causes(error: BaseException) -> list[BaseException]:
  """The error and what it was raised from, outermost first."""
  chain = [error]
  while chain[-1].__cause__ or chain[-1].__context__:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  return chain


def flag_error_message(error: Exception) -> str:
  """One line for a command line that cannot be parsed."""
  name = getattr(error, 'flagname', '') or ''
  if isinstance(error, flags.UnrecognizedFlagError) and name.startswith(
    'config.'
  ):
    return f'--{name} overrides a config field: give --config=FILE first'
  chain = causes(error)
  # ml_collections' KeyError for a misspelled field holds the "Did you
  # mean" hint in its argument; str() would quote it with escaped newlines.
  key_error = next((e for e in chain if isinstance(e, KeyError)), None)
  if key_error:
    message = f'unknown config field {key_error.args[0]}'
  else:
    message = str(chain[-1])
  if 'Failed loading config file' in message:
    # Its last line is the reason: the file's error, or the file missing.
    reason = message.strip().splitlines()[-1]
    message = f'cannot load the --config file: {reason}'
  return ' '.join(message.split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one `error:` line instead of a traceback."""
  try:
    remaining = FLAGS(argv)
    if FLAGS.config is not None:
      FLAGS.config.keys()  # ml_collections defers the file's errors to here.
    return remaining
  except Exception as e:  # noqa: BLE001 - flag and config-file errors alike.
    print(f'error: {flag_error_message(e)}', file=sys.stderr)
    sys.exit(2)


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
  keep_own_info_logs()
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
  except KeyboardInterrupt:
    # Training's loop saves on the first Ctrl-C; this is any other moment,
    # or a second Ctrl-C. Checkpoints already written are whole.
    print('error: interrupted; relaunch the same command to resume from '
          'the last checkpoint', file=sys.stderr)  # fmt: skip
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
