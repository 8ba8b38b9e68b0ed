"""Input pipeline: decode and batch indexed examples with grain.

Knows nothing about models. Batches are {'image': uint8[B, H, W, 3],
'label': int32[B]}; evaluation batches add a boolean 'mask'.
"""

import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from collections.abc import Sequence

import grain
import ml_collections
import numpy as np
from absl import logging

from catdog_jax.data import images
from catdog_jax.data.dataset import Example

# Bytes: a cache line, and what XLA:CPU needs to use host memory in place.
ALIGNMENT = 64


def num_train_steps(config, num_train: int) -> int:
  """The run's length in steps: `config.num_train_steps` if set, else
  `num_epochs` passes of global batches over `num_train` examples."""
  if config.num_train_steps is not None:
    return config.num_train_steps
  return max(1, config.num_epochs * num_train // config.batch_size)


def load_image(source, key: str, image_size: int) -> np.ndarray:
  """One indexed item's pixels as every model input: uint8, resized, RGB.

  Raises:
    ValueError: naming the item, if it changed since it was indexed.
  """
  try:
    return images.resize(source.load(key), image_size)
  except (OSError, images.UnusableImageError) as e:
    raise ValueError(
      f'{key} changed since it was indexed ({e}); run again to re-index'
    ) from e


def load_example(
  example: Example, source, image_size: int
) -> dict[str, np.ndarray]:
  """Loads one indexed example into {'image', 'label'}."""
  image = load_image(source, example.key, image_size)
  return {'image': image, 'label': np.int32(example.label)}


# --- Batching ---------------------------------------------------------------


def shuffle_seed(seed: int) -> int:
  """The seed of the training shuffle, from `config.seed`.

  It is the seed grain's `.seed(seed).shuffle()` derives, so runs shuffle
  exactly as they did before batches were gathered whole (and checkpoints
  of those runs resume in their order).
  """
  return int(np.random.SeedSequence([seed, 1]).generate_state(1, np.uint32)[0])


@dataclasses.dataclass(frozen=True)
class TrainOrder:
  """Which example each training position reads: one global stream, shuffled
  anew every epoch, of which shard `shard_index` reads every
  `shard_count`-th position.

  `dataset` is grain's form of the stream; `indices` computes the same
  positions in bulk, with grain's own permutation, without a Python call per
  position through the dataset's layers.
  """

  num_examples: int
  seed: int
  shard_index: int = 0
  shard_count: int = 1

  @functools.cached_property
  def _shuffle_seed(self) -> int:
    return shuffle_seed(self.seed)

  def dataset(self) -> grain.MapDataset:
    ds = grain.MapDataset.range(self.num_examples)
    ds = ds.shuffle(seed=self._shuffle_seed).repeat()
    return ds[self.shard_index :: self.shard_count]

  def indices(self, start: int, count: int) -> np.ndarray:
    """Example indices of this shard's positions start, ..., start+count-1."""
    positions = self.shard_index + self.shard_count * np.arange(
      start, start + count
    )
    epochs, in_epoch = np.divmod(positions, self.num_examples)
    base = self._shuffle_seed
    # As grain's ShuffleMapDataset: a fresh permutation seed every epoch.
    return np.array(
      [
        grain.experimental.index_shuffle(
          int(i),
          max_index=self.num_examples - 1,
          seed=int((base + epoch) % 2**32),
          rounds=4,
        )
        for epoch, i in zip(epochs, in_epoch, strict=True)
      ],
      np.int64,
    )


def create_train_iterator(
  examples: Sequence[Example],
  source,
  config: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
  cached: dict[str, np.ndarray] | None = None,
):
  """An endless, seeded, reshuffled-every-epoch iterator of train batches.

  Each shard reads every `shard_count`-th example of the one global stream,
  so the union of the shards' k-th batches is the global k-th batch whatever
  the number of shards. Its state ({'next_index': examples served}, from
  `get_state`) is checkpointable and the same for both paths. With
  `config.cache`, all examples are decoded once, up front (each epoch's
  reshuffle deals every shard different ones), and each batch is one gather
  from memory, in the same order.

  Args:
    examples: the training examples.
    source: where their pixels come from (`sources.create_source`).
    config: the `data` config (image_size, num_workers, prefetch_batches).
    batch_size: examples per batch on this shard.
    seed: seed of the shuffle.
    shard_index: which shard this process reads.
    shard_count: number of shards (processes).
    cached: `load_all`'s arrays of `examples`, if already loaded; serves
      from memory as `config.cache` does.
  """
  order = TrainOrder(len(examples), seed, shard_index, shard_count)
  if config.cache or cached is not None:
    if cached is None:
      cached = load_all(examples, source, config)
    return CachedBatchIterator(order, cached, batch_size)
  load = functools.partial(
    load_example, source=source, image_size=config.image_size
  )
  ds = order.dataset().map(lambda i: load(examples[i]))
  ds = ds.to_iter_dataset(_read_options(config, batch_size))
  return iter(ds.batch(batch_size, drop_remainder=True))


def aligned_take(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
  """`array[indices]` in new memory aligned to 64 bytes.

  Aligned host memory is what XLA:CPU adopts without a copy; a large
  unaligned batch (what NumPy gives above glibc's mmap threshold, 32 MB)
  was copied again on its way to the device: 512 x 160 x 160 x 3 images
  were served at 14,000 images/s against 30,000 at 256.
  """
  shape = (len(indices), *array.shape[1:])
  nbytes = int(np.prod(shape)) * array.itemsize
  buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
  offset = -buffer.ctypes.data % ALIGNMENT
  out = buffer[offset : offset + nbytes].view(array.dtype).reshape(shape)
  # mode='clip': with the default 'raise', NumPy buffers `out` (a second
  # copy); the indices are in range by construction.
  return np.take(array, indices, axis=0, out=out, mode='clip')


class CachedBatchIterator:
  """Batches gathered from in-memory arrays: one gather per array and batch.

  Serves exactly the batches the decoding iterator would, without a Python
  call per image, and has the same checkpointable state.
  """

  def __init__(
    self, order: TrainOrder, arrays: dict[str, np.ndarray], batch_size: int
  ):
    self._order = order
    self._arrays = arrays
    self._batch_size = batch_size
    self._next_index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    indices = self._order.indices(self._next_index, self._batch_size)
    self._next_index += self._batch_size
    return {
      key: aligned_take(value, indices) for key, value in self._arrays.items()
    }

  def get_state(self) -> dict[str, int]:
    return {'next_index': self._next_index}

  def set_state(self, state: dict[str, int]) -> None:
    self._next_index = state['next_index']

  def start_prefetch(self) -> None:
    """Nothing to start: batches are gathered when asked for."""


def _read_options(config, batch_size: int) -> grain.ReadOptions:
  return grain.ReadOptions(
    num_threads=config.num_workers or os.cpu_count(),
    prefetch_buffer_size=config.prefetch_batches * batch_size,
  )


def load_all(
  examples: Sequence[Example], source, config: ml_collections.ConfigDict
) -> dict[str, np.ndarray]:
  """Decodes every example into memory, on `config.num_workers` threads.

  Returns:
    {'image': uint8[N, S, S, 3], 'label': int32[N]}, indexed like `examples`.
  """
  size = config.image_size
  logging.info(
    'Caching %d training images at %dx%d (%.2f GB).',
    len(examples),
    size,
    size,
    len(examples) * size * size * 3 / 1e9,
  )
  start = time.perf_counter()
  load = functools.partial(load_example, source=source, image_size=size)
  loaded = grain.MapDataset.source(list(examples)).map(load)
  batches = list(loaded.to_iter_dataset(_read_options(config, 256)).batch(256))
  logging.info('Cached in %.1f s.', time.perf_counter() - start)
  return {
    key: np.concatenate([batch[key] for batch in batches])
    for key in ('image', 'label')
  }


def load_eval_example(example: Example | None, source, image_size: int):
  """`load_example` plus a `mask`; None (padding) gives a blank, masked row."""
  if example is None:
    return {
      'image': np.zeros((image_size, image_size, 3), np.uint8),
      'label': np.int32(0),
      'mask': np.False_,
    }
  return {**load_example(example, source, image_size), 'mask': np.True_}


def eval_batches(
  examples: Sequence[Example | None],
  source,
  config: ml_collections.ConfigDict,
  *,
  batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `examples` in order, in full batches with a `mask`.

  None entries and the padding of the last batch have mask False, so every
  batch has one shape and every example is evaluated exactly once.
  """

  def load(index):
    return load_eval_example(examples[index], source, config.image_size)

  # Indices, not examples, go through grain: it would drop None elements.
  ds = grain.MapDataset.range(len(examples)).map(load)
  read_options = _read_options(config, batch_size)
  for batch in ds.to_iter_dataset(read_options).batch(batch_size):
    yield pad_batch(batch, batch_size)


def pad_batch(
  batch: dict[str, np.ndarray], batch_size: int
) -> dict[str, np.ndarray]:
  """Pads every array to `batch_size` rows with zeros (mask False)."""
  padding = batch_size - len(batch['label'])
  return {
    key: np.concatenate([value, np.zeros_like(value[:1]).repeat(padding, 0)])
    for key, value in batch.items()
  }
