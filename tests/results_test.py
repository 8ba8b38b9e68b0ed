"""The README's and the docs' figures for the pretrained configs agree with
the run records in results/*.json (scripts/results.py renders them)."""

import importlib
import importlib.util
import os
import re

import pytest

from tests import helpers

_spec = importlib.util.spec_from_file_location(
  'results', os.path.join(helpers.REPO, 'scripts', 'results.py')
)
results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results)

RECORDS = results.load_records()


def read(relative: str) -> str:
  with open(os.path.join(helpers.REPO, relative)) as f:
    return f.read()


def test_the_readme_table_is_the_records():
  assert RECORDS
  assert results.readme_table(read('README.md')) == results.table(RECORDS)


def spread(values, digits: int) -> str:
  """'0.984-0.988', or one figure when they agree."""
  low, high = f'{min(values):.{digits}f}', f'{max(values):.{digits}f}'
  return low if low == high else f'{low}-{high}'


def test_the_quick_start_and_the_backbone_page_quote_the_records():
  quick_start = read('README.md').split('## Quick start')[1][:1500]
  first_command = re.search(r'--config=(configs/\w+\.py)', quick_start)[1]
  rows = [e for e in RECORDS if e['config'] == first_command]
  assert rows, f'no record of {first_command}'
  test = spread([e['test']['accuracy'] for e in rows], 3)
  oxford = spread([e['other_collection']['accuracy'] for e in rows], 3)
  assert f'{test} on Kaggle' in ' '.join(quick_start.split())
  assert f'{oxford} on Oxford' in ' '.join(quick_start.split())
  page = read('docs/pretrained.md')
  for config in {e['config'] for e in RECORDS}:
    rows = [e for e in RECORDS if e['config'] == config]
    line = next(
      line
      for line in page.splitlines()
      if line.startswith(f'| `{os.path.basename(config)}`')
    )
    assert spread([e['test']['accuracy'] for e in rows], 3) in line
    assert spread([e['other_collection']['accuracy'] for e in rows], 3) in line


@pytest.mark.parametrize('entry', RECORDS, ids=lambda e: os.path.basename(
  e['config']) + f'-{e["seed"]}')  # fmt: skip
def test_each_config_docstring_carries_its_records_figures(entry):
  name = os.path.basename(entry['config'])[:-3]
  module = importlib.import_module(f'configs.{name}')
  docstring = ' '.join(module.__doc__.split())
  assert results.minutes(entry['command_seconds']) in docstring
  assert f'{entry["test"]["accuracy"]:.4f}' in docstring
  assert f'{entry["other_collection"]["accuracy"]:.3f}' in docstring
