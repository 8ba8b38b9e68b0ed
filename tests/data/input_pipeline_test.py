"""Tests for catdog_jax.input_pipeline, on JPEG folders the tests write."""

import grain
import numpy as np
import pytest

from catdog_jax.data import dataset
from catdog_jax.data import input_pipeline as ip
from catdog_jax.data import sources
from tests import helpers


def data_config(root, **overrides):
  return helpers.tiny_config(root, **overrides).data


def index(root):
  config = data_config(root)
  source = sources.create_source(config)
  return dataset.build_index(source, config).examples, source


def test_train_iterator_batches_and_resumes_exactly(flat_dataset):
  config = data_config(flat_dataset)
  examples, source = index(flat_dataset)

  def new_iterator():
    return ip.create_train_iterator(
      examples, source, config, batch_size=8, seed=3
    )

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
  examples, source = index(flat_dataset)
  whole = ip.create_train_iterator(
    examples, source, config, batch_size=8, seed=1
  )
  halves = [
      ip.create_train_iterator(
          examples, source, config, batch_size=4, seed=1, shard_index=i,
          shard_count=2)
      for i in range(2)
  ]  # fmt: skip
  for _ in range(3):
    expected = sorted(image.tobytes() for image in next(whole)['image'])
    parts = [image.tobytes() for h in halves for image in next(h)['image']]
    assert sorted(parts) == expected


def test_eval_batches_pad_and_mask_every_example_once(flat_dataset):
  config = data_config(flat_dataset)
  examples, source = index(flat_dataset)
  examples = examples[:19]
  batches = list(ip.eval_batches(examples, source, config, batch_size=8))
  assert [b['mask'].sum() for b in batches] == [8, 8, 3]
  assert all(b['image'].shape == (8, 32, 32, 3) for b in batches)
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(labels, [e.label for e in examples])


def test_eval_batches_keep_none_padding_rows(flat_dataset):
  examples, source = index(flat_dataset)
  padded = [examples[0], None, examples[1], None, None]
  batches = list(
    ip.eval_batches(padded, source, data_config(flat_dataset), batch_size=4)
  )
  assert len(batches) == 2
  masks = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(masks, [1, 0, 1, 0, 0, 0, 0, 0])


def test_cached_iterator_serves_the_same_stream(flat_dataset):
  examples, source = index(flat_dataset)
  streams = []
  for cache in (False, True):
    config = data_config(flat_dataset, data__cache=cache)
    iterator = ip.create_train_iterator(
      examples, source, config, batch_size=8, seed=2, shard_index=1,
      shard_count=2,
    )  # fmt: skip
    streams.append([next(iterator) for _ in range(12)])  # Two epochs.
  for plain, cached in zip(*streams, strict=True):
    np.testing.assert_array_equal(plain['image'], cached['image'])
    np.testing.assert_array_equal(plain['label'], cached['label'])


@pytest.mark.parametrize('shard_index, shard_count', [(0, 1), (1, 2)])
def test_bulk_indices_are_grains_order(shard_index, shard_count):
  order = ip.TrainOrder(37, seed=5, shard_index=shard_index,
                        shard_count=shard_count)  # fmt: skip
  stream = order.dataset()
  expected = [stream[i] for i in range(100)]  # Several epochs.
  np.testing.assert_array_equal(order.indices(0, 100), expected)
  np.testing.assert_array_equal(order.indices(60, 7), expected[60:67])


def test_shuffle_is_the_one_earlier_runs_used():
  """Checkpoints of runs before the bulk path resume in their own order."""
  earlier = grain.MapDataset.range(50).seed(7).shuffle().repeat()
  order = ip.TrainOrder(50, seed=7).dataset()
  assert [order[i] for i in range(150)] == [earlier[i] for i in range(150)]


@pytest.mark.parametrize('count', [1, 3, 8])
def test_aligned_take_gathers_into_aligned_memory(count):
  array = np.arange(10 * 5 * 3, dtype=np.uint8).reshape(10, 5, 3)
  indices = np.array([7, 0, 7, 3, 9, 1, 2, 8])[:count]
  out = ip.aligned_take(array, indices)
  np.testing.assert_array_equal(out, array[indices])
  assert out.ctypes.data % ip.ALIGNMENT == 0 and out.flags.c_contiguous


def test_cached_and_decoded_iterators_share_their_state(flat_dataset):
  """A checkpoint of either path resumes the other at the same batch."""
  examples, source = index(flat_dataset)

  def iterator(cache):
    config = data_config(flat_dataset, data__cache=cache)
    return ip.create_train_iterator(
      examples, source, config, batch_size=8, seed=4
    )

  decoded, cached = iterator(False), iterator(True)
  for _ in range(13):  # Past the first epoch of 80.
    next(decoded)
    next(cached)
  assert decoded.get_state() == cached.get_state() == {'next_index': 104}
  resumed = iterator(True)
  resumed.set_state(decoded.get_state())
  np.testing.assert_array_equal(next(resumed)['image'], next(decoded)['image'])


def test_num_train_steps_from_epochs():
  config = helpers.tiny_config('/data', num_train_steps=None)
  config.num_epochs = 3
  assert ip.num_train_steps(config, num_train=100) == 3 * 100 // 8
  config.num_train_steps = 7
  assert ip.num_train_steps(config, num_train=100) == 7
