"""What main.py does with its flags: one library call per mode, one-line
errors, a quiet log, and the record of how a run was launched.

main.py keeps the flags and reads them; nothing here reads FLAGS, except
the flag parser's own wrapper.
"""

import os
import re
import shlex
import sys

import jax
from absl import flags
from absl import logging
from ml_collections import config_flags

from catdog_jax import allocator
from catdog_jax import fileio
from catdog_jax import probe
from catdog_jax import train
from catdog_jax.data import audit
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import predict
from catdog_jax.models import summary
from catdog_jax.serving import export

# What each --mode needs, and what it does (--helpfull shows this).
MODES = {
  'train': (('config', 'workdir'), 'train, evaluate and checkpoint'),
  'summary': (('config',), "the model's per-layer table"),
  'audit': (('config', 'workdir'), 'index and check the data'),
  'predict': (('workdir', 'images'), 'dog probabilities of --images'),
  'eval': (('workdir', 'images'), 'metrics on the labelled folder --images'),
  'report': (('workdir',), 'redraw WORKDIR/report.md and plots/'),
  'export': (('workdir',), 'the model as one file that runs with jax alone'),
  'serve': (('workdir',), 'a page on 127.0.0.1:--port to try your photos'),
}


def images_argument(mode, images: list[str] | None, extra: list[str]):
  """--images as the mode takes it: predict, every path given (the shell
  expands --images=*.jpg into several words; they come as `extra`); eval,
  one folder.

  Raises:
    UsageError: on words the mode does not take.
  """
  if mode == 'predict' and images:
    return [*images, *extra]
  if extra:
    raise UsageError(
      f'--mode={mode} takes no arguments, got {" ".join(extra)!r}'
      + (' (one --images folder)' if mode == 'eval' else '')
    )
  if mode == 'eval' and images and len(images) > 1:
    raise UsageError('--mode=eval takes one labelled --images folder')
  if mode == 'eval' and images:
    return images[0]
  return images


def run_mode(mode: str, *, provenance=None, **flag_values) -> None:
  """Runs one --mode with the flag values it needs.

  Args:
    mode: a key of MODES.
    provenance: the launch's record (`provenance`), for run.json.
    **flag_values: config, workdir, images, output (None when not given).

  Raises:
    UsageError: naming a flag the mode needs and was not given.
  """
  for name in MODES[mode][0]:
    if flag_values[name] is None:
      raise UsageError(f'--{name} is required for --mode={mode}')
  config, workdir = flag_values['config'], flag_values['workdir']
  images, output = flag_values['images'], flag_values['output']
  if mode == 'train':
    trainer = train.train_and_evaluate
    if config.probe.enabled:
      trainer = probe.probe_and_evaluate
    trainer(config, workdir, provenance)
  elif mode == 'summary':
    print(summary.model_summary(config))
  elif mode == 'audit':
    print(audit.format_audit(audit.run_audit(config.data, workdir)))
  elif mode == 'predict':
    print(predict.predict_to_csv(workdir, images, output))
  elif mode == 'eval':
    print(predict.evaluate_to_json(workdir, images, output))
  elif mode == 'report':
    print(f'Wrote {predict.regenerate_report(workdir)}')
  elif mode == 'export':
    print(f'Wrote {export.export_workdir(workdir, output)}')
  elif mode == 'serve':
    from catdog_jax.serving import page  # Gradio: the serve extra.

    page.serve(workdir, flag_values['port'])


COMPILATION_CACHE_ENV = 'CATDOG_JAX_COMPILATION_CACHE'


def compilation_cache_is_off(environ=os.environ) -> bool:
  """Whether $CATDOG_JAX_COMPILATION_CACHE=off asks for no cache."""
  return environ.get(COMPILATION_CACHE_ENV, '').lower() == 'off'


def use_compilation_cache(environ=os.environ) -> str | None:
  """Keeps XLA's compiled programs on disk, so a relaunch, an eval or a
  predict skips compiling what an earlier command compiled (the train steps
  of quick_cpu: 27 s to 11 s). Returns the folder, None when off.

  $CATDOG_JAX_COMPILATION_CACHE=off turns it off; JAX's own
  $JAX_COMPILATION_CACHE_DIR, when set, is left to JAX.
  """
  if compilation_cache_is_off(environ):
    return None
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return environ['JAX_COMPILATION_CACHE_DIR']
  folder = os.path.join(fileio.user_cache_dir(), 'xla')
  jax.config.update('jax_compilation_cache_dir', folder)
  return folder


def start_process() -> None:
  """What every mode does first: this project's log lines only, then which
  allocator runs and where compiled programs are kept."""
  keep_own_info_logs()
  logging.info(allocator.describe())
  if cache := use_compilation_cache():
    logging.info('Compiled programs kept in %s (%s=off turns it off).',
                 cache, COMPILATION_CACHE_ENV)  # fmt: skip


PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Others' warnings that say nothing to a user of this project: orbax warns
# on every checkpoint saved without validation figures (a stop on SIGTERM or
# Ctrl-C between validations); such a checkpoint is simply never "the best".
_NOT_NEWS = frozenset({'Requested `tracked_metric`; did not provide metrics.'})


def keep_own_info_logs() -> None:
  """INFO lines from this project only; warnings and errors from anyone.

  Without it, orbax writes a dozen INFO lines per checkpoint and JAX one
  about each backend it could not start (libtpu on every CPU machine).
  """
  installed = f'{os.sep}site-packages{os.sep}'  # A virtualenv in the repo.

  def keep(record) -> bool:
    if record.getMessage() in _NOT_NEWS:
      return False
    # Python's level numbers: absl's own logging.WARNING is -1.
    return record.levelno >= logging.converter.STANDARD_WARNING or (
      record.pathname.startswith(PROJECT_DIR + os.sep)
      and installed not in record.pathname
    )

  # On absl's handler itself: it calls its inner handler's emit(), which
  # skips that handler's filters.
  logging.get_absl_handler().addFilter(keep)


def provenance(config_flag: flags.FlagHolder) -> dict:
  """The command, config file and overrides of this launch, for run.json."""
  flag = flags.FLAGS[config_flag.name]
  return {
    'command': shlex.join([os.path.basename(sys.executable), *sys.argv]),
    'config_file': config_flags.get_config_filename(flag),
    'overrides': [
      f'{key}={value}'
      for key, value in config_flags.get_override_values(flag).items()
    ],
  }


def causes(error: BaseException) -> list[BaseException]:
  """The error and what it was raised from, outermost first."""
  chain = [error]
  while chain[-1].__cause__ or chain[-1].__context__:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  return chain


# absl's text for a value its parser refused: "flag --NAME=VALUE: why".
_ILLEGAL_VALUE = re.compile(r'^flag --config\.([\w.]+)=(.*?): ', re.DOTALL)
_TYPE_NAMES = {
  bool: 'a bool (True or False)',
  int: 'an int',
  float: 'a float',
  str: 'a string',
  tuple: 'a tuple, e.g. (96,128)',
}


def override_type_message(error: Exception, config) -> str | None:
  """'--config.F=V: F is an int' for an override of the wrong type, or None
  when `error` is no such error or `config` (the loaded file) lacks F."""
  match = _ILLEGAL_VALUE.match(str(error))
  if not match or config is None:
    return None
  field, value = match.groups()
  *groups, leaf = field.split('.')
  node = config
  for group in groups:
    node = node.get(group)
    if node is None:
      return None
  try:
    field_type = node.get_type(leaf)
  except (AttributeError, KeyError):
    return None
  kind = _TYPE_NAMES.get(field_type, field_type.__name__)
  return f'--config.{field}={value}: {field} is {kind}'


def flag_error_message(error: Exception, config=None) -> str:
  """One line for a command line that cannot be parsed; `config` is the
  config file as loaded, if it was."""
  name = getattr(error, 'flagname', '') or ''
  if isinstance(error, flags.UnrecognizedFlagError) and name.startswith(
    'config.'
  ):
    return f'--{name} overrides a config field: give --config=FILE first'
  typed = override_type_message(error, config)
  if typed:
    return typed
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
    remaining = flags.FLAGS(argv)
    loaded_config()  # ml_collections defers the file's errors to here.
    return remaining
  except Exception as e:  # noqa: BLE001 - flag and config-file errors alike.
    try:
      config = loaded_config()
    except Exception:  # noqa: BLE001 - the file itself did not load.
      config = None
    print(f'error: {flag_error_message(e, config)}', file=sys.stderr)
    sys.exit(2)


def loaded_config():
  """The --config file as loaded (overrides applied so far), or None."""
  if 'config' not in flags.FLAGS:
    return None
  config = flags.FLAGS['config'].value
  if config is not None:
    config.keys()
  return config
