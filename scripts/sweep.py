"""Runs a grid of training runs and tabulates their test results.

  python scripts/sweep.py --config=configs/base.py --workdir=DIR \
    --sweep=optimizer.learning_rate=1e-3,3e-4 --sweep=batch_size=16,32 \
    [--parallel=2] [--config.K=V ...]

Each point of the grid (the product of all --sweep flags) trains with
`main.py` in DIR/<key=value,...>/, one after another or --parallel at once.
The sweep is resumable: finished runs are skipped and interrupted ones resume
from their checkpoints. Writes DIR/sweep_results.csv, DIR/sweep_results.md
and, where one key varies, DIR/sweep_results.png.
"""

import concurrent.futures
import csv
import itertools
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from catdog_jax import fileio
from catdog_jax import workdir as workdir_lib
from catdog_jax.evaluation import plots

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Base config file.')
flags.DEFINE_string('workdir', None, 'Sweep folder.', required=True)
flags.DEFINE_multi_string('sweep', [], 'KEY=V1,V2[,...]; repeat for a grid.')
flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
flags.mark_flags_as_required(['config'])

MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'main.py')
RUN_INFO = 'sweep_run.json'
ERROR_LOG = 'sweep_error.log'  # A failed run's output, in its folder.
METRICS = ('accuracy', 'f1', 'log_loss')


def parse_sweeps(specs: list[str], config) -> dict[str, list[str]]:
  """{'KEY': ['V1', 'V2']}; raises app.UsageError on unknown keys."""
  sweeps = {}
  for spec in specs:
    key, sep, values = spec.partition('=')
    if not sep or not values:
      raise app.UsageError(f'--sweep={spec}: expected KEY=V1,V2')
    node = config
    for part in key.split('.'):
      if part not in node:
        raise app.UsageError(f'--sweep={spec}: the config has no {key}')
      node = node[part]
    sweeps[key] = values.split(',')
  return sweeps


def grid(sweeps: dict[str, list[str]]) -> list[dict[str, str]]:
  return [dict(zip(sweeps, point, strict=True))
          for point in itertools.product(*sweeps.values())]  # fmt: skip


def run_name(point: dict[str, str]) -> str:
  """A readable folder name: key=value pairs joined by commas."""
  return ','.join(f'{key}={value}' for key, value in point.items())


def config_args(argv: list[str]) -> list[str]:
  """The --config flags given to this script, forwarded to every run."""
  return [arg for arg in argv[1:] if arg.startswith('--config')]


def train_one(point, base_args, sweep_dir) -> dict:
  """Trains one point unless it finished before; returns its results row."""
  run_dir = os.path.join(sweep_dir, run_name(point))
  info_path = os.path.join(run_dir, RUN_INFO)
  if not os.path.exists(info_path):
    overrides = [f'--config.{key}={value}' for key, value in point.items()]
    command = [sys.executable, MAIN, *base_args, *overrides,
               f'--workdir={run_dir}']  # fmt: skip
    logging.info('Running %s', run_name(point))
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      tail = result.stderr.strip().splitlines()[-1:] or ['(no output)']
      logging.error('%s failed: %s', run_name(point), tail[0])
      os.makedirs(run_dir, exist_ok=True)
      with open(os.path.join(run_dir, ERROR_LOG), 'w') as f:
        f.write(result.stderr)
      return {**point, 'status': 'failed'}
    fileio.write_json(info_path, {'train_seconds': time.perf_counter() - start})
  test = fileio.read_json(workdir_lib.path(run_dir, workdir_lib.EVAL_TEST))
  val_path = workdir_lib.path(run_dir, workdir_lib.EVAL_VAL)
  val = fileio.read_json(val_path) if os.path.exists(val_path) else {}
  seconds = fileio.read_json(info_path)['train_seconds']
  return {
    **point, 'status': 'done', 'val_accuracy': val.get('accuracy', ''),
    **{m: test[m] for m in METRICS}, 'train_seconds': round(seconds, 1),
  }  # fmt: skip


def write_tables(rows: list[dict], columns: list[str], sweep_dir: str) -> str:
  """Writes the CSV and Markdown tables; returns the Markdown."""
  with open(os.path.join(sweep_dir, 'sweep_results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, restval='')
    writer.writeheader()
    writer.writerows(rows)
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    cells = [_cell(row.get(c, '')) for c in columns]
    lines.append('| ' + ' | '.join(cells) + ' |')
  markdown = '\n'.join(lines) + '\n'
  with open(os.path.join(sweep_dir, 'sweep_results.md'), 'w') as f:
    f.write(markdown)
  return markdown


def _cell(value) -> str:
  return f'{value:.4f}' if isinstance(value, float) else str(value)


def main(argv):
  del argv  # The --config flags are read from sys.argv to forward them.
  sweeps = parse_sweeps(FLAGS.sweep, FLAGS.config)
  if not sweeps:
    raise app.UsageError('give at least one --sweep=KEY=V1,V2')
  os.makedirs(FLAGS.workdir, exist_ok=True)
  base_args = config_args(sys.argv)
  points = grid(sweeps)
  with concurrent.futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
    rows = list(pool.map(
      lambda p: train_one(p, base_args, FLAGS.workdir), points
    ))  # fmt: skip
  columns = [*sweeps, 'status', 'val_accuracy', *METRICS, 'train_seconds']
  markdown = write_tables(rows, columns, FLAGS.workdir)
  varying = [key for key, values in sweeps.items() if len(values) > 1]
  done = [row for row in rows if row['status'] == 'done']
  if len(varying) == 1 and done:
    plots.plot_sweep(
      [row[varying[0]] for row in done],
      {m: [row[m] for row in done] for m in ('accuracy', 'log_loss')},
      varying[0],
      os.path.join(FLAGS.workdir, 'sweep_results.png'),
    )
  print(markdown)
  failed = [
    run_name({key: row[key] for key in sweeps})
    for row in rows
    if row['status'] != 'done'
  ]
  if failed:
    sys.exit(f'error: {len(failed)} of {len(rows)} runs failed '
             f'({"; ".join(failed)}); each one\'s output is in its folder\'s '
             f'{ERROR_LOG}')  # fmt: skip


if __name__ == '__main__':
  app.run(main)
