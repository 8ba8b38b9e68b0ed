"""The first hour on a GPU or TPU: measure what the README estimates.

  python benchmarks/measure_device.py --images=../shared/data/kaggle200
  # Also the whole gpu.py run (about an hour of device time at most):
  python benchmarks/measure_device.py --images=../shared/data/kaggle200 \\
    --full_run --workdir=/tmp/gpu_run

On whatever devices JAX finds, it runs throughput.py's jitted steps for
each config, the host feed (throughput.py --mode=host) at the batch sizes
given, roofline.py's estimate for the same configs, and with --full_run the
README's gpu.py command end to end; then prints Markdown rows to paste into
the README: each measured figure beside the estimate for this device, with
the device, the date and the command. It measures; it never fills in a
figure it did not get.
"""

import datetime
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

FLAGS = flags.FLAGS
flags.DEFINE_list(
  'configs',
  ['base', 'quick_cpu', 'fast_cpu', 'seed_cnn_tuned', 'gpu', 'tpu'],
  'Configs.',
)
flags.DEFINE_string('images', None, 'Training folder, for the host feed.')
flags.DEFINE_list('batch_sizes', ['128', '256'], 'Host feed batch sizes.')
flags.DEFINE_list(
  'decode_workers', ['1', '2'], 'Host feed: decode threads, then processes.'
)
flags.DEFINE_integer('steps', 20, 'Timed repetitions per figure.')
flags.DEFINE_multi_string('set', [], 'Override for every config, key=value.')
flags.DEFINE_bool('full_run', False, 'Also run configs/gpu.py end to end.')
flags.DEFINE_string('workdir', None, 'Workdir of the full run.')
flags.mark_flag_as_required('images')

# Which roofline column a device's `device_kind` is compared with.
ROOFLINE_DEVICES = {'H100': 'H100 SXM', 'TPU v5 lite': 'TPU v5e'}


def run_json(args: list[str]) -> list[dict]:
  """The JSON lines a script prints; stops on its failure, with its output."""
  result = subprocess.run(
    [sys.executable, *args], cwd=REPO, capture_output=True, text=True
  )
  if result.returncode != 0:
    sys.exit(f'error: {" ".join(args)} failed:\n{result.stderr[-3000:]}')
  lines = result.stdout.strip().splitlines()
  return [json.loads(line) for line in lines if line.startswith('{')]


def config_flags(name: str, prefix: str = '') -> list[str]:
  """--config flags for configs/`name`.py with the --set overrides that
  start with `prefix`."""
  return [f'--config=configs/{name}.py'] + [
    f'--config.{pair}' for pair in FLAGS.set if pair.startswith(prefix)
  ]


def roofline_column(device_kind: str) -> str | None:
  for prefix, column in ROOFLINE_DEVICES.items():
    if device_kind.startswith(prefix):
      return column
  return None


def estimate(roofline: dict, device_kind: str, kind: str) -> str:
  column = roofline_column(device_kind)
  if column is None:
    return 'no estimate for this device'
  memory = roofline[f'{column} {kind} memory-bound images/s']
  compute = roofline[f'{column} {kind} compute-bound images/s']
  return f'{memory:,.0f} to {compute:,.0f}'


def row(what, config, measured, expected, device, command) -> str:
  date = datetime.date.today().isoformat()
  return (
    f'| {what} | `{config}` | {measured:,.0f} | {expected} | {device} | '
    f'{date} | `{command}` |'
  )


def step_rows(rooflines: dict[str, dict]) -> list[str]:
  rows = []
  for name in FLAGS.configs:
    args = ['benchmarks/throughput.py', *config_flags(name)]
    args.append(f'--steps={FLAGS.steps}')
    (result,) = run_json(args)
    device = result['device']
    for kind in ('train', 'eval'):
      rows.append(
        row(
          f'{kind} step, batch {result["batch_size"]}',
          name,
          result[f'{kind}_images_per_sec'],
          estimate(rooflines[name], device, kind),
          device,
          'python ' + ' '.join(args),
        )
      )
  return rows


def host_rows() -> list[str]:
  """The host feed with gpu.py's data settings (no model is involved)."""
  args = ['benchmarks/throughput.py', *config_flags('gpu', 'data.')]
  args.append('--mode=host')
  args += [f'--images={FLAGS.images}', f'--steps={FLAGS.steps}']
  args.append(f'--batch_sizes={",".join(FLAGS.batch_sizes)}')
  args.append(f'--decode_workers={",".join(FLAGS.decode_workers)}')
  return [
    row(
      f'host feed, {r["path"]}, batch {r["batch_size"]}'
      + (f', {r["decode_workers"]} workers' if r['decode_workers'] else ''),
      'gpu',
      r['host_images_per_sec'],
      'the train step rates above',
      r['device'],
      'python ' + ' '.join(args),
    )
    for r in run_json(args)
  ]


def full_run_row() -> str:
  args = ['main.py', *config_flags('gpu'), f'--workdir={FLAGS.workdir}']
  args.append(f'--config.data.root={FLAGS.images}')
  start = time.perf_counter()
  run_json(args)
  minutes = (time.perf_counter() - start) / 60
  with open(os.path.join(FLAGS.workdir, 'eval_test.json')) as f:
    test = json.load(f)
  date = datetime.date.today().isoformat()
  return (
    f'| `configs/gpu.py`, whole command | {minutes:.1f} min | test '
    f'accuracy {test["accuracy"]:.4f}, F1 {test["f1"]:.4f} | {date} | '
    f'`python {" ".join(args)}` |'
  )


def main(argv):
  del argv
  if FLAGS.full_run and not FLAGS.workdir:
    sys.exit('error: --full_run needs --workdir')
  args = ['benchmarks/roofline.py', f'--configs={",".join(FLAGS.configs)}']
  args += [f'--set={pair}' for pair in FLAGS.set]
  rooflines = {r['config']: r for r in run_json(args)}
  print('| what | config | measured images/s | roofline estimate | device '
        '| date | command |')  # fmt: skip
  print('|---|---|---|---|---|---|---|')
  for line in step_rows(rooflines) + host_rows():
    print(line)
  if FLAGS.full_run:
    print()
    print('| run | wall time | result | date | command |')
    print('|---|---|---|---|---|')
    print(full_run_row())


if __name__ == '__main__':
  app.run(main)
