"""Tests for catdog_jax.dataset: finding, checking, grouping, splitting."""

import os
import shutil

import numpy as np
import pytest

from catdog_jax.data import dataset
from catdog_jax.data import sources
from catdog_jax.errors import UsageError
from tests import helpers


def data_config(root, **overrides):
  return helpers.tiny_config(str(root), **overrides).data


def build_index(root, cache_path=None):
  config = data_config(root)
  return dataset.build_index(sources.create_source(config), config, cache_path)


@pytest.mark.parametrize(
  'path, label',
  [
    ('cats/1.jpg', 0),
    ('Dog/7.JPG', 1),
    (os.path.join('PetImages', 'Cat', '3.jpg'), 0),
    (os.path.join('PetImages', 'DOGS', 'x', '3.png'), 1),
    ('cat.123.jpg', 0),
    ('Dog.5.jpeg', 1),
    (os.path.join('cats', 'dog.1.jpg'), 0),  # The folder wins.
    ('catalogue.jpg', None),
    ('horse.1.jpg', None),
    (os.path.join('birds', '1.jpg'), None),
  ],
)
def test_label_from_path(path, label):
  assert sources.label_from_path(path) == label


def test_only_image_extensions_count_in_any_case(tmp_path):
  helpers.write_dataset(tmp_path, 'folders', per_class=1)
  shutil.copy(tmp_path / 'Cats' / '0.jpg', tmp_path / 'Cats' / 'UPPER.JPG')
  for name in ('notes.txt', 'Thumbs.db'):
    (tmp_path / 'Cats' / name).write_bytes(b'x')
  index = build_index(tmp_path)
  assert sorted(e.key for e in index.examples) == [
    os.path.join('Cats', '0.jpg'),
    os.path.join('Cats', 'UPPER.JPG'),
    os.path.join('Dogs', '0.jpg'),
  ]
  assert index.skipped == [] and index.num_files == 3


@pytest.mark.parametrize('layout', ['flat', 'folders'])
def test_both_layouts_are_indexed(tmp_path, layout):
  helpers.write_dataset(tmp_path, layout, per_class=5)
  examples = build_index(tmp_path).examples
  assert len(examples) == 10
  assert sorted(e.label for e in examples) == [0] * 5 + [1] * 5


def test_unusable_files_are_skipped_with_reasons(tmp_path):
  helpers.write_dataset(tmp_path, 'folders', per_class=3)
  cats = tmp_path / 'Cats'
  (cats / 'empty.jpg').write_bytes(b'')
  (cats / 'text.jpg').write_text('not an image')
  good = (cats / '0.jpg').read_bytes()
  (cats / 'cut.jpg').write_bytes(good[: len(good) // 2])
  (cats / 'folder.jpg').mkdir()
  os.symlink('loop.jpg', cats / 'loop.jpg')  # Points at itself.
  index = build_index(tmp_path)
  reasons = {item['path']: item['reason'] for item in index.skipped}
  assert reasons == {
    os.path.join('Cats', 'folder.jpg'): 'a folder, not an image',
    os.path.join('Cats', 'empty.jpg'): 'empty file',
    os.path.join('Cats', 'text.jpg'): 'OpenCV cannot decode it as an image',
    os.path.join('Cats', 'cut.jpg'): 'truncated JPEG (no end-of-image marker)',
    os.path.join('Cats', 'loop.jpg'): reasons[os.path.join('Cats', 'loop.jpg')],
  }
  assert reasons[os.path.join('Cats', 'loop.jpg')].startswith('cannot read')
  assert len(index.examples) == 6


def test_index_cache_skips_unchanged_files(tmp_path, monkeypatch):
  root = helpers.write_dataset(tmp_path / 'data', 'flat', per_class=4)
  cache = str(tmp_path / 'cache.json')
  first = build_index(root, cache)
  inspected = []
  real_inspect = dataset.inspect_item

  def counting_inspect(source, key, max_pixels):
    inspected.append(key)
    return real_inspect(source, key, max_pixels)

  monkeypatch.setattr(dataset, 'inspect_item', counting_inspect)
  second = build_index(root, cache)
  assert inspected == [] and second.examples == first.examples
  helpers.write_jpeg(
    os.path.join(root, 'cat.0.jpg'),
    helpers.synthetic_image(1, np.random.default_rng(1)),
  )
  build_index(root, cache)
  assert inspected == ['cat.0.jpg']


def test_split_is_decided_by_content_alone(tmp_path):
  helpers.write_dataset(tmp_path, 'flat', per_class=30)

  def split_by_path(index):
    splits = dataset.split_examples(index.examples, 0.2, 0.2)
    return {e.key: name for name, split in splits.items() for e in split}

  before = split_by_path(build_index(tmp_path))
  helpers.write_dataset(tmp_path / 'more', 'folders', per_class=10, seed=7)
  after = split_by_path(build_index(tmp_path))
  assert len(after) == 80
  assert {p: after[p] for p in before} == before  # Nothing moved.


def test_duplicates_land_in_one_split(tmp_path):
  helpers.write_dataset(tmp_path, 'flat', per_class=30)
  # An exact copy under another name and class: a mislabelled duplicate.
  shutil.copy(tmp_path / 'cat.0.jpg', tmp_path / 'dog.100.jpg')
  index = build_index(tmp_path)
  group = sorted(['cat.0.jpg', 'dog.100.jpg'])
  assert group in [sorted(g) for g in index.duplicate_groups]
  assert group in [sorted(g) for g in index.conflicting_label_groups]
  splits = dataset.split_examples(index.examples, 0.2, 0.2)
  report = dataset.data_report(index, splits)
  assert report['cross_split_duplicates'] == 0
  assert report['num_exact_duplicate_groups'] >= 1


def test_split_fractions_and_test_stability():
  keys = [f'{i:016x}' for i in range(0, 2**64, 2**64 // 10_000)]
  splits = [dataset.split_of(k, 0.1, 0.1) for k in keys]
  counts = {name: splits.count(name) / len(splits) for name in dataset.SPLITS}
  assert counts['test'] == pytest.approx(0.1, abs=0.01)
  assert counts['val'] == pytest.approx(0.1, abs=0.01)
  for key, split in zip(keys, splits, strict=True):
    if split == 'test':  # A different val fraction never moves a test file.
      assert dataset.split_of(key, 0.3, 0.1) == 'test'


def test_load_splits_rejects_unusable_folders(tmp_path):
  with pytest.raises(UsageError, match='is not a folder'):
    dataset.load_splits(data_config(tmp_path / 'missing'), None)
  with pytest.raises(UsageError, match='no usable labelled images'):
    dataset.load_splits(data_config(tmp_path), None)
  helpers.write_dataset(tmp_path / 'one', 'flat', per_class=10)
  for path in (tmp_path / 'one').glob('dog.*'):
    path.unlink()
  with pytest.raises(UsageError, match='holds no dog images'):
    dataset.load_splits(data_config(tmp_path / 'one'), None)


def test_load_splits_rejects_an_empty_split(tmp_path):
  helpers.write_dataset(tmp_path, 'flat', per_class=2)
  with pytest.raises(UsageError, match='split is empty'):
    dataset.load_splits(data_config(tmp_path, data__val_fraction=0.01), None)
