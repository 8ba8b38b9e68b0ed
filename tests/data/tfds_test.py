"""Tests for data.source='tfds'.

The real `cats_vs_dogs` needs a download to prepare, which tests may not do:
TFDS's own `mock_data` stands in for the prepared records (random images and
labels), so these tests check the plumbing, not accuracy.
"""

import json
import subprocess
import sys

import pytest

from catdog_jax import train
from catdog_jax.data import dataset
from catdog_jax.data import sources
from tests import helpers

REPO = helpers.REPO


@pytest.fixture
def tfds():
  """tensorflow_datasets, imported by the tests that use it (2 s: not in
  every pytest worker's collection)."""
  return pytest.importorskip('tensorflow_datasets')


def tfds_config(**overrides):
  return helpers.tiny_config(None, data__source='tfds', **overrides)


def test_tfds_records_are_indexed_and_split_by_content(tfds):
  config = tfds_config().data
  with tfds.testing.mock_data(num_examples=30):
    source = sources.create_source(config)
    index = dataset.build_index(source, config)
    image = source.load(index.examples[0].key)
  assert index.description == 'tfds:cats_vs_dogs/train'
  assert len(index.examples) + len(index.skipped) == 30
  assert {e.label for e in index.examples} <= {0, 1}
  assert image.ndim == 3 and image.shape[-1] == 3
  assert len({e.split_key for e in index.examples}) == len(index.examples)


@pytest.mark.slow  # Trains for real.
def test_train_and_evaluate_reads_tfds(tfds, tmp_path):
  config = tfds_config(num_train_steps=4, data__val_fraction=0.25,
                       data__test_fraction=0.25)  # fmt: skip
  with tfds.testing.mock_data(num_examples=40):
    train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'data_report.json') as f:
    report = json.load(f)
  assert report['root'] == 'tfds:cats_vs_dogs/train'
  with open(tmp_path / 'eval_test.json') as f:
    assert json.load(f)['num_examples'] == sum(
      report['splits']['test'].values()
    )


@pytest.mark.slow
@pytest.mark.usefixtures('tfds')  # Skips without it.
def test_unprepared_tfds_stops_with_one_line(tmp_path):
  result = subprocess.run(
    [
      sys.executable, 'main.py', '--config=configs/base.py',
      '--config.data.source=tfds',
      f'--config.data.tfds_data_dir={tmp_path / "empty"}',
      f'--workdir={tmp_path / "w"}',
    ],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: TFDS dataset 'cats_vs_dogs' is not prepared")
  assert '--config.data.source=folder --config.data.root=PATH' in last
