"""The README's results table, from the run records in results/*.json.

Record a finished run (after `--mode=eval --images=OTHER_COLLECTION` on it,
for the other-collection columns), giving the whole command's wall time as
`time` measured it:

  python scripts/results.py record --workdir=/tmp/lite0 \
    --command_seconds=402 --machine="AMD EPYC Zen 4"

and print the table the README holds between its `results:pretrained`
markers (tests/results_test.py fails when the two differ):

  python scripts/results.py table
"""

import glob
import json
import os
import sys

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'results')
BEGIN, END = (
  '<!-- results:pretrained begin -->',
  '<!-- results:pretrained end -->',
)
HEADER = (
  '| config | seed | wall time | Kaggle test accuracy | F1 | log-loss '
  '| Oxford accuracy (cat / dog recall) | Oxford log-loss |\n'
  '|---|---|---|---|---|---|---|---|'
)

_WORKDIR = flags.DEFINE_string('workdir', None, 'A finished run to record.')
_SECONDS = flags.DEFINE_float(
  'command_seconds', None, "The whole command's wall time, in seconds."
)
_MACHINE = flags.DEFINE_string('machine', None, 'The hardware, in words.')
_NOTE = flags.DEFINE_string('note', '', "Shown after the config's name.")


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def record(workdir: str, command_seconds: float, machine: str, note: str):
  """The record of a finished run: its command, hardware, wall time, test
  figures and, where eval ran on another folder, that folder's."""
  run = read_json(os.path.join(workdir, 'run.json'))
  config = read_json(os.path.join(workdir, 'config.json'))
  test = read_json(os.path.join(workdir, 'eval_test.json'))
  entry = {
    'config': run['config_file'],
    'overrides': run['overrides'],
    'note': note,
    'seed': config['seed'],
    # A probe fits its head by full-batch descent from zeros: no draw.
    'seed_matters': not config['probe']['enabled'],
    'date': run['started_utc'][:10],
    'machine': machine,
    'command_seconds': command_seconds,
    'run': {k: run[k] for k in ('wall_seconds', 'devices', 'processor', 'jax')},
    'test': {k: test[k] for k in ('accuracy', 'f1', 'log_loss')},
  }
  folder_path = os.path.join(workdir, 'eval_folder.json')
  if os.path.exists(folder_path):
    folder = read_json(folder_path)
    entry['other_collection'] = {
      'folder': os.path.basename(folder['root']),
      'accuracy': folder['accuracy'],
      'recall_per_class': folder['recall_per_class'],
      'log_loss': folder['log_loss'],
    }
  return entry


def minutes(seconds: float) -> str:
  """'6 min 42 s'."""
  whole = round(seconds)
  return f'{whole // 60} min {whole % 60} s' if whole >= 60 else f'{whole} s'


def row(entry: dict) -> str:
  name = f'`{os.path.basename(entry["config"])}`'
  if entry['note']:
    name += f' ({entry["note"]})'
  test = entry['test']
  cells = [
    name,
    str(entry['seed']) if entry['seed_matters'] else '-',
    minutes(entry['command_seconds']),
    f'{test["accuracy"]:.4f}',
    f'{test["f1"]:.4f}',
    f'{test["log_loss"]:.4f}',
  ]
  other = entry.get('other_collection')
  if other:
    recall = other['recall_per_class']
    cells += [
      f'{other["accuracy"]:.3f} ({recall["cat"]:.2f} / {recall["dog"]:.2f})',
      f'{other["log_loss"]:.3f}',
    ]
  else:
    cells += ['not measured', 'not measured']
  return '| ' + ' | '.join(cells) + ' |'


def load_records(folder: str = RESULTS) -> list[dict]:
  """Every record: the quickest config first, each config's by seed."""
  records = [read_json(p) for p in glob.glob(f'{folder}/*.json')]
  quickest = {}
  for entry in records:
    seconds = quickest.get(entry['config'], entry['command_seconds'])
    quickest[entry['config']] = min(seconds, entry['command_seconds'])
  return sorted(records, key=lambda e: (quickest[e['config']], e['seed']))


def table(records: list[dict]) -> str:
  return '\n'.join([HEADER, *(row(entry) for entry in records)])


def readme_table(readme_text: str) -> str:
  """The table between the README's markers."""
  start = readme_text.index(BEGIN) + len(BEGIN)
  return readme_text[start : readme_text.index(END)].strip()


def main(argv):
  if argv[1:] == ['table']:
    print(table(load_records()))
  elif argv[1:] == ['record']:
    entry = record(_WORKDIR.value, _SECONDS.value, _MACHINE.value, _NOTE.value)
    name = os.path.basename(entry['config'])[:-3]
    if entry['seed_matters']:
      name += f'-seed{entry["seed"]}'
    path = os.path.join(RESULTS, f'{name}.json')
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, 'w') as f:
      json.dump(entry, f, indent=2)
      f.write('\n')
    print(f'Wrote {path}:\n{row(entry)}')
  else:
    sys.exit('usage: results.py record --workdir=... | table')


if __name__ == '__main__':
  app.run(main)
