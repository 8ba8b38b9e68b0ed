"""Input pipeline: decode and batch indexed examples with grain.

Knows nothing about models. Batches are {'image': uint8[B, H, W, 3],
'label': int32[B]}; evaluation batches add a boolean 'mask'.
"""

import functools
import os
import time
from collections.abc import Iterator
from collections.abc import Sequence

import grain
import ml_collections
import numpy as np
from absl import logging

from catdog_jax import images
from catdog_jax.dataset import Example


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


def create_train_iterator(
  examples: Sequence[Example],
  source,
  config: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
) -> grain.DatasetIterator:
  """An endless, seeded, reshuffled-every-epoch iterator of train batches.

  Each shard reads every `shard_count`-th example of the one global stream,
  so the union of the shards' k-th batches is the global k-th batch whatever
  the number of shards. Its state (`get_state`) is checkpointable. With
  `config.cache`, all examples are decoded once, up front (each epoch's
  reshuffle deals every shard different ones), and served from memory in
  the same order.

  Args:
    examples: the training examples.
    source: where their pixels come from (`sources.create_source`).
    config: the `data` config (image_size, num_workers, prefetch_batches).
    batch_size: examples per batch on this shard.
    seed: seed of the shuffle.
    shard_index: which shard this process reads.
    shard_count: number of shards (processes).
  """
  ds = grain.MapDataset.range(len(examples)).seed(seed).shuffle().repeat()
  ds = ds[shard_index::shard_count]
  load = functools.partial(
    load_example, source=source, image_size=config.image_size
  )
  if config.cache:
    cached = load_all(examples, source, config)
    ds = ds.map(lambda i: {key: value[i] for key, value in cached.items()})
  else:
    ds = ds.map(lambda i: load(examples[i]))
  ds = ds.to_iter_dataset(_read_options(config, batch_size))
  return iter(ds.batch(batch_size, drop_remainder=True))


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
