"""Tests for catdog_jax.duplicates."""

import random

import cv2
import numpy as np

from catdog_jax.data import duplicates
from configs import base


def photo_like(seed: int, size: int = 160) -> np.ndarray:
  """Smooth random RGB content, closer to a photo than white noise."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (10, 10, 3), np.uint8)
  return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def reencode(image, quality):
  _, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, quality])
  return cv2.imdecode(data, cv2.IMREAD_COLOR)


def test_phash_is_stable_under_reencoding_resizing_and_small_crops():
  threshold = base.get_config().data.near_duplicate_bits
  for seed in range(5):
    image = photo_like(seed)
    phash = duplicates.perceptual_hash(image)
    variants = [
      reencode(image, 40),
      cv2.resize(image, (97, 97), interpolation=cv2.INTER_AREA),
      image[2:-2, 2:-2],  # 1.25% off each side.
    ]
    for variant in variants:
      distance = duplicates.hamming_distance(
        phash, duplicates.perceptual_hash(variant)
      )
      assert distance <= threshold
  hashes = [duplicates.perceptual_hash(photo_like(s)) for s in range(40)]
  distances = [
    duplicates.hamming_distance(a, b)
    for i, a in enumerate(hashes)
    for b in hashes[i + 1 :]
  ]
  assert min(distances) > threshold


def test_near_pairs_match_brute_force():
  rng = random.Random(0)
  hashes = [rng.getrandbits(64) for _ in range(400)]
  for i in range(0, 60, 3):  # Plant close neighbours.
    hashes[i + 1] = hashes[i] ^ (1 << rng.randrange(64)) ^ (1 << 5)
  for max_distance in (0, 2, 5):
    expected = {
      (i, j)
      for i in range(len(hashes))
      for j in range(i + 1, len(hashes))
      if duplicates.hamming_distance(hashes[i], hashes[j]) <= max_distance
    }
    found = duplicates.near_duplicate_pairs(hashes, max_distance)
    assert {tuple(p) for p in found.tolist()} == expected
  assert len(expected) >= 20


def test_groups_join_exact_and_near_links():
  pairs = np.concatenate(
    [
      duplicates.equal_key_pairs(['a', 'b', 'a', 'c', 'd']),
      np.array([[3, 4]]),
    ]
  )
  ids = duplicates.group_ids(5, pairs)
  assert ids[0] == ids[2] and ids[3] == ids[4]
  assert len({ids[0], ids[1], ids[3]}) == 3
