"""Exact and near-duplicate images, grouped without a quadratic pass.

Near duplicates (the same photo re-encoded, resized or slightly cropped) have
perceptual hashes within a small Hamming distance. Candidate pairs come from
multi-index hashing: split the 64 bits into `max_distance + 1` chunks; two
hashes within `max_distance` bits agree exactly on at least one chunk
(pigeonhole), so only hashes sharing a chunk value are ever compared.
"""

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASH_BITS = 64


def perceptual_hash(image_rgb: np.ndarray) -> int:
  """64-bit DCT hash (pHash) of an RGB image.

  The lowest 8x8 frequencies of a 32x32 grayscale thumbnail, each compared
  with their median: it survives re-encoding, resizing and small crops.
  """
  gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
  thumbnail = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
  low = cv2.dct(thumbnail.astype(np.float32))[:8, :8].flatten()
  bits = low > np.median(low[1:])  # The DC term would skew the median.
  return int.from_bytes(np.packbits(bits).tobytes(), 'big')


def hamming_distance(a: int, b: int) -> int:
  return (a ^ b).bit_count()


def near_duplicate_pairs(
  hashes: Sequence[int], max_distance: int
) -> np.ndarray:
  """[N, 2] index pairs (i < j) whose hashes differ in <= max_distance bits."""
  values = np.asarray(hashes, dtype=np.uint64)
  bounds = np.linspace(0, HASH_BITS, max_distance + 2).astype(np.uint64)
  pairs = set()
  for low, high in zip(bounds[:-1], bounds[1:], strict=True):
    chunk = (values >> low) & np.uint64((1 << int(high - low)) - 1)
    order = np.argsort(chunk, kind='stable')
    starts = np.flatnonzero(np.diff(chunk[order])) + 1
    for bucket in np.split(order, starts):
      if len(bucket) > 1:
        pairs.update(_close_pairs(values, np.sort(bucket), max_distance))
  return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _close_pairs(values, bucket, max_distance):
  """Pairs within one bucket whose full hashes are close enough."""
  distances = np.bitwise_count(values[bucket, None] ^ values[None, bucket])
  rows, cols = np.nonzero(np.triu(distances <= max_distance, k=1))
  return zip(bucket[rows].tolist(), bucket[cols].tolist(), strict=True)


def equal_key_pairs(keys: Sequence[str]) -> np.ndarray:
  """[N, 2] pairs linking every item to the first item with the same key."""
  first = {}
  pairs = []
  for i, key in enumerate(keys):
    pairs.append((first.setdefault(key, i), i))
  return np.array([p for p in pairs if p[0] != p[1]], np.int64).reshape(-1, 2)


def group_ids(num_items: int, pairs: np.ndarray) -> np.ndarray:
  """Connected-component id of each item, given linking pairs."""
  ones = np.ones(len(pairs), np.int8)
  graph = coo_matrix(
    (ones, (pairs[:, 0], pairs[:, 1])), shape=(num_items, num_items)
  )
  _, labels = connected_components(graph, directed=False)
  return labels
