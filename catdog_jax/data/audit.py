"""`--mode=audit`: index a data folder and report what is in it."""

import os

import ml_collections

from catdog_jax import fileio
from catdog_jax import workdir as workdir_lib
from catdog_jax.data import dataset


def run_audit(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Indexes `config.root`, writes `workdir/data_report.json`, returns it."""
  os.makedirs(workdir, exist_ok=True)
  _, _, report = dataset.load_splits(
    config, workdir_lib.path(workdir, workdir_lib.INDEX_CACHE)
  )
  fileio.write_json(workdir_lib.path(workdir, workdir_lib.DATA_REPORT), report)
  return report


def format_audit(report: dict, examples: int = 5) -> str:
  """A short human-readable summary of a data report."""
  lines = [
    f'{report["root"]}: {report["num_files"]} image files, '
    f'{report["num_used"]} used, {len(report["skipped"])} skipped.',
  ]
  for item in report['skipped'][:50]:
    lines.append(f'  skipped {item["path"]}: {item["reason"]}')
  if len(report['skipped']) > 50:
    lines.append(f'  ... and {len(report["skipped"]) - 50} more')
  lines.append(
    f'Duplicate groups: {report["num_exact_duplicate_groups"]} exact, '
    f'{report["num_near_duplicate_groups"]} near; '
    f'{report["cross_split_duplicates"]} straddle splits.'
  )
  for group in report['duplicate_groups'][:examples]:
    lines.append('  ' + ', '.join(group))
  if report['conflicting_label_groups']:
    lines.append(
      f'{len(report["conflicting_label_groups"])} groups hold both cat and '
      'dog labels (a mislabelled copy):'
    )
    for group in report['conflicting_label_groups'][:examples]:
      lines.append('  ' + ', '.join(group))
  for name, counts in report['splits'].items():
    lines.append(f'{name}: {counts["cat"]} cats, {counts["dog"]} dogs')
  return '\n'.join(lines)
