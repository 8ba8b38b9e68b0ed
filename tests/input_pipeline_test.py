"""Tests for catdog_jax.input_pipeline, on JPEG folders the tests write."""

import os
import shutil

import cv2
import numpy as np
import pytest

from catdog_jax import input_pipeline as ip
from catdog_jax.errors import UsageError
from tests import conftest


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
  assert ip.label_from_path(path) == label


def test_only_image_extensions_count_in_any_case(tmp_path):
  conftest.write_dataset(tmp_path, 'folders', per_class=1)
  for name in ('a.JPG', 'b.PnG', 'notes.txt', 'Thumbs.db'):
    (tmp_path / 'Cats' / name).write_bytes(b'x')
  found = [path for path, _ in ip.list_labelled_files(str(tmp_path))]
  assert sorted(found) == sorted(
    [
      os.path.join('Cats', '0.jpg'),
      os.path.join('Cats', 'a.JPG'),
      os.path.join('Cats', 'b.PnG'),
      os.path.join('Dogs', '0.jpg'),
    ]
  )


@pytest.mark.parametrize('layout', ['flat', 'folders'])
def test_both_layouts_are_indexed(tmp_path, layout):
  conftest.write_dataset(tmp_path, layout, per_class=5)
  examples = ip.find_examples(str(tmp_path))
  assert len(examples) == 10
  assert sorted(e.label for e in examples) == [0] * 5 + [1] * 5
  assert all(os.path.isabs(e.path) for e in examples)


def test_decode_swaps_bgr_to_rgb_and_resizes():
  rgb = np.zeros((10, 20, 3), np.uint8)
  rgb[..., 0] = 255  # Pure red.
  _, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  image = ip.decode_image(png.tobytes(), 16)
  assert image.shape == (16, 16, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[0, 0], [255, 0, 0])


@pytest.mark.parametrize(
  'pixels',
  [
    np.full((8, 8), 77, np.uint8),  # Grayscale.
    np.full((8, 8, 4), 77, np.uint8),  # With alpha.
    np.full((8, 8, 3), 77 * 257, np.uint16),  # 16-bit.
  ],
  ids=['gray', 'rgba', '16bit'],
)
def test_decode_gives_three_uint8_channels(pixels):
  _, png = cv2.imencode('.png', pixels)
  image = ip.decode_image(png.tobytes(), 8)
  assert image.shape == (8, 8, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image, 77)


def test_decode_refuses_non_images():
  with pytest.raises(ValueError, match='cannot decode'):
    ip.decode_image(b'not an image', 8)


def test_split_is_decided_by_content_alone(tmp_path):
  conftest.write_dataset(tmp_path, 'flat', per_class=30)
  before = ip.split_examples(ip.find_examples(str(tmp_path)), 0.2, 0.2)
  split_by_digest = {
    e.digest: name for name, split in before.items() for e in split
  }
  # Renaming and copying files, and adding new ones, moves nothing.
  shutil.copy(tmp_path / 'cat.0.jpg', tmp_path / 'cat.999.jpg')
  os.rename(tmp_path / 'dog.3.jpg', tmp_path / 'dog.333.jpg')
  conftest.write_dataset(tmp_path / 'more', 'folders', per_class=10, seed=7)
  after = ip.split_examples(ip.find_examples(str(tmp_path)), 0.2, 0.2)
  for name, split in after.items():
    for example in split:
      assert split_by_digest.get(example.digest, name) == name
  assert sum(len(s) for s in after.values()) == 60 + 1 + 20


def test_split_fractions_and_test_stability():
  digests = [f'{i:016x}' for i in range(0, 2**64, 2**64 // 10_000)]
  splits = [ip.split_of(d, 0.1, 0.1) for d in digests]
  counts = {name: splits.count(name) / len(splits) for name in ip.SPLITS}
  assert counts['test'] == pytest.approx(0.1, abs=0.01)
  assert counts['val'] == pytest.approx(0.1, abs=0.01)
  # A different val fraction never moves a test example.
  for digest, split in zip(digests, splits, strict=True):
    if split == 'test':
      assert ip.split_of(digest, 0.3, 0.1) == 'test'


def data_config(root, **overrides):
  return conftest.tiny_config(root, **overrides).data


def test_load_splits_rejects_unusable_folders(tmp_path):
  with pytest.raises(UsageError, match='is not a folder'):
    ip.load_splits(data_config(str(tmp_path / 'missing')))
  with pytest.raises(UsageError, match='no labelled images'):
    ip.load_splits(data_config(str(tmp_path)))
  conftest.write_dataset(tmp_path / 'one', 'flat', per_class=10)
  for path in (tmp_path / 'one').glob('dog.*'):
    path.unlink()
  with pytest.raises(UsageError, match='holds no dog images'):
    ip.load_splits(data_config(str(tmp_path / 'one')))


def test_load_splits_rejects_an_empty_split(tmp_path):
  conftest.write_dataset(tmp_path, 'flat', per_class=2)
  with pytest.raises(UsageError, match='split is empty'):
    ip.load_splits(data_config(str(tmp_path), data__val_fraction=0.01))


def test_train_iterator_batches_and_resumes_exactly(flat_dataset):
  config = data_config(flat_dataset)
  examples = ip.find_examples(flat_dataset)

  def new_iterator():
    return ip.create_train_iterator(examples, config, batch_size=8, seed=3)

  iterator = new_iterator()
  batches = [next(iterator) for _ in range(15)]  # 120 > 80: two epochs.
  assert batches[0]['image'].shape == (8, 32, 32, 3)
  assert batches[0]['image'].dtype == np.uint8
  assert batches[0]['label'].dtype == np.int32
  assert set(np.concatenate([b['label'] for b in batches])) == {0, 1}

  resumed = new_iterator()
  for _ in range(4):
    next(resumed)
  state = resumed.get_state()
  resumed = new_iterator()
  resumed.set_state(state)
  for expected in batches[4:]:
    np.testing.assert_array_equal(next(resumed)['image'], expected['image'])


def test_shards_partition_the_global_batches(flat_dataset):
  config = data_config(flat_dataset)
  examples = ip.find_examples(flat_dataset)
  whole = ip.create_train_iterator(examples, config, batch_size=8, seed=1)
  halves = [
      ip.create_train_iterator(
          examples, config, batch_size=4, seed=1, shard_index=i,
          shard_count=2)
      for i in range(2)
  ]  # fmt: skip
  for _ in range(3):
    expected = sorted(image.tobytes() for image in next(whole)['image'])
    parts = [image.tobytes() for h in halves for image in next(h)['image']]
    assert sorted(parts) == expected


def test_eval_batches_pad_and_mask_every_example_once(flat_dataset):
  config = data_config(flat_dataset)
  examples = ip.find_examples(flat_dataset)[:19]
  batches = list(ip.eval_batches(examples, config, batch_size=8))
  assert [b['mask'].sum() for b in batches] == [8, 8, 3]
  assert all(b['image'].shape == (8, 32, 32, 3) for b in batches)
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(labels, [e.label for e in examples])
