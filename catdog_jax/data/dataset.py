"""Indexing a source: checking, de-duplicating and splitting its images.

Every item is read and decoded once when indexed; unusable ones are skipped
with a reason. The results are cached in the workdir, keyed by path, size and
modification time, so a second run decodes nothing it has seen.

Exact duplicates (same bytes or same pixels) and near duplicates (perceptual
hashes within `data.near_duplicate_bits`) form groups, and each group's split
is decided by the content hash of its first member: a group never straddles
splits, and adding files never moves existing ones (except that a new file
can join two groups into one, which then follows its first member).
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from catdog_jax import fileio
from catdog_jax.classes import CLASS_NAMES
from catdog_jax.data import duplicates
from catdog_jax.data import images
from catdog_jax.data import sources
from catdog_jax.errors import UsageError

SPLITS = ('train', 'val', 'test')
CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Example:
  """One usable labelled image: its key in the source, class id, split key.

  `split_key` is the content digest of the first item of its duplicate group
  (its own digest when it has no duplicates).
  """

  key: str
  label: int
  split_key: str


@dataclasses.dataclass
class DatasetIndex:
  """What indexing found in a source."""

  description: str  # The folder, or tfds:NAME/SPLIT.
  num_files: int
  examples: list[Example]
  skipped: list[dict[str, str]]  # {'path': key, 'reason': why}
  duplicate_groups: list[list[str]]  # Keys, groups of 2 or more.
  exact_groups: int
  conflicting_label_groups: list[list[str]]
  records: dict[str, dict]  # inspect_item's record of every listed key.


# --- Checking items -----------------------------------------------------------


def digest(data) -> str:
  return hashlib.blake2b(data, digest_size=16).hexdigest()


def inspect_item(source, key: str, max_pixels: int) -> dict[str, object]:
  """Reads, checks and fingerprints one item; never raises.

  Returns:
    {'label', 'digest', 'pixel_digest', 'phash'} for a usable image, else
    {'reason'}; both with the source's cache key fields.
  """
  cache_key = source.cache_key(key) or {}
  try:
    image, data, label = source.inspect(key, max_pixels)
  except OSError as e:
    return {**cache_key, 'reason': f'cannot read: {e.strerror or e}'}
  except images.UnusableImageError as e:
    return {**cache_key, 'reason': str(e)}
  except Exception as e:  # noqa: BLE001 - a decoder bug must not stop a run.
    return {**cache_key, 'reason': f'cannot decode: {type(e).__name__}: {e}'}
  pixel_digest = digest(np.ascontiguousarray(image).data)
  return {
    **cache_key,
    'label': label,
    'digest': pixel_digest if data is None else digest(data),
    'pixel_digest': pixel_digest,
    'phash': f'{duplicates.perceptual_hash(image):016x}',
  }


def read_cache(cache_path: str | None, max_pixels: int) -> dict[str, dict]:
  """Cached file records, or {} if absent, unreadable or from other settings."""
  if not cache_path or not os.path.exists(cache_path):
    return {}
  try:
    with open(cache_path) as f:
      cache = json.load(f)
  except (OSError, ValueError) as e:
    logging.warning('Ignoring unreadable index cache %s: %s', cache_path, e)
    return {}
  if cache.get('version') != CACHE_VERSION or (
    cache.get('max_pixels') != max_pixels
  ):
    return {}
  return cache['files']


def write_cache(cache_path: str, max_pixels: int, records: dict) -> None:
  """Writes atomically: a crash mid-write leaves the old cache intact."""
  with fileio.atomic_write(cache_path) as f:
    json.dump(
      {'version': CACHE_VERSION, 'max_pixels': max_pixels, 'files': records}, f
    )


def inspect_all(
  source,
  keys: Sequence[str],
  config: ml_collections.ConfigDict,
  cache_path: str | None,
) -> dict[str, dict]:
  """`inspect_item` for every key on all cores, reusing valid cached records."""
  cached = read_cache(cache_path, config.max_pixels)
  records, todo = {}, []
  for key in keys:
    record, cache_key = cached.get(key), source.cache_key(key)
    if (
      record
      and cache_key
      and all(record.get(k) == v for k, v in cache_key.items())
    ):
      records[key] = record
    else:
      todo.append(key)
  logging.info('Indexing %d images (%d cached) in %s.', len(keys),
               len(records), source.description)  # fmt: skip
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(
    config.num_workers or None
  ) as pool:
    results = pool.map(
      lambda key: inspect_item(source, key, config.max_pixels), todo
    )
    for done, (key, record) in enumerate(zip(todo, results, strict=True), 1):
      records[key] = record
      if done % 2000 == 0 or done == len(todo):
        rate = done / (time.perf_counter() - start)
        logging.info('Checked %d/%d new images (%.0f/s).', done, len(todo),
                     rate)  # fmt: skip
  if cache_path and todo:
    write_cache(cache_path, config.max_pixels, records)
  return records


def usable_and_skipped(keys, records) -> tuple[list[str], list[dict]]:
  """Keys whose records are usable, and {'path', 'reason'} for the rest."""
  usable = [key for key in keys if 'reason' not in records[key]]
  skipped = [
    {'path': key, 'reason': records[key]['reason']}
    for key in keys if 'reason' in records[key]
  ]  # fmt: skip
  return usable, skipped


# --- Grouping and splitting ---------------------------------------------------


def duplicate_group_ids(records: Sequence[dict], max_bits: int) -> np.ndarray:
  """Group id per record: same bytes, same pixels, or close perceptual hash."""
  pairs = np.concatenate(
    [
      duplicates.equal_key_pairs([r['digest'] for r in records]),
      duplicates.equal_key_pairs([r['pixel_digest'] for r in records]),
      duplicates.near_duplicate_pairs(
        [int(r['phash'], 16) for r in records], max_bits
      ),
    ]
  )
  return duplicates.group_ids(len(records), pairs)


def duplicates_of(
  reference: dict[str, dict], records: dict[str, dict], max_bits: int
) -> dict[str, str]:
  """Keys of `records` that duplicate a `reference` item, each to one of them.

  Duplicates by the rules that group a dataset's own duplicates: same
  bytes, same pixels, or perceptual hashes within `max_bits`.
  """
  reference_keys = list(reference)
  keys = [k for k, r in records.items() if 'reason' not in r]
  groups = duplicate_group_ids(
    [reference[k] for k in reference_keys] + [records[k] for k in keys],
    max_bits,
  )
  first_reference = {}
  for key, group in zip(reference_keys, groups, strict=False):
    first_reference.setdefault(group, key)
  return {
    key: first_reference[group]
    for key, group in zip(keys, groups[len(reference_keys) :], strict=True)
    if group in first_reference
  }


def build_index(
  source, config: ml_collections.ConfigDict, cache_path: str | None = None
) -> DatasetIndex:
  """Lists, checks and groups the labelled images of `source`."""
  keys, skipped = source.list_keys()
  num_files = len(keys) + len(skipped)
  records = inspect_all(source, keys, config, cache_path)
  usable, unusable = usable_and_skipped(keys, records)
  skipped += unusable
  group_of = duplicate_group_ids(
    [records[k] for k in usable], config.near_duplicate_bits
  )
  members = collections.defaultdict(list)
  for key, group in zip(usable, group_of, strict=True):
    members[group].append(key)
  examples = [
    Example(key, records[key]['label'],
            records[members[group][0]]['digest'])
    for key, group in zip(usable, group_of, strict=True)
  ]  # fmt: skip
  groups = [m for m in members.values() if len(m) > 1]
  return DatasetIndex(
    description=source.description,
    num_files=num_files,
    examples=examples,
    skipped=skipped,
    duplicate_groups=groups,
    exact_groups=sum(
      len({records[k]['pixel_digest'] for k in m}) == 1 for m in groups
    ),
    conflicting_label_groups=[
      m for m in groups if len({records[k]['label'] for k in m}) > 1
    ],
    records=records,
  )


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
  """Split of a file (or duplicate group) from its content digest alone.

  The digest maps to a uniform number u in [0, 1): test takes the lowest
  `test_fraction`, val the next `val_fraction`. Each class therefore gets
  each fraction in expectation (stratified without looking at file order),
  and changing `val_fraction` never moves a test file.
  """
  u = int(key[:16], 16) / 2**64
  if u < test_fraction:
    return 'test'
  if u < test_fraction + val_fraction:
    return 'val'
  return 'train'


def split_examples(
  examples: Sequence[Example], val_fraction: float, test_fraction: float
) -> dict[str, list[Example]]:
  """Groups examples into train/val/test by `split_of` their split key."""
  splits = {name: [] for name in SPLITS}
  for example in examples:
    name = split_of(example.split_key, val_fraction, test_fraction)
    splits[name].append(example)
  return splits


def spread(examples: Sequence[Example], count: int) -> list[Example]:
  """`count` examples spread evenly over `examples` (all when fewer), in
  order: a sample of an index sorted by class holds both classes."""
  count = min(count, len(examples))
  positions = np.linspace(0, len(examples), count, endpoint=False)
  return [examples[i] for i in positions.astype(int)]


def class_counts(examples: Sequence[Example]) -> dict[str, int]:
  counts = collections.Counter(example.label for example in examples)
  return {name: counts[i] for i, name in enumerate(CLASS_NAMES)}


def cross_split_groups(
  index: DatasetIndex, splits: dict[str, list[Example]]
) -> int:
  """Duplicate groups whose members landed in more than one split."""
  split_of_key = {e.key: name for name, split in splits.items() for e in split}
  return sum(
    len({split_of_key[k] for k in group}) > 1
    for group in index.duplicate_groups
  )


def check_splits(
  splits: dict[str, list[Example]], config: ml_collections.ConfigDict
) -> None:
  """Raises UsageError unless both classes and every asked-for split exist."""
  counts = class_counts([e for split in splits.values() for e in split])
  if not any(counts.values()):
    raise UsageError(
      f'no usable labelled images in {config.root!r}: expected class '
      'folders (cats/ and dogs/, Cat/ and Dog/) or names like cat.1.jpg'
    )
  missing = [name for name, count in counts.items() if count == 0]
  if missing:
    raise UsageError(
      f'data.root {config.root!r} holds no {" or ".join(missing)} images; '
      'both classes are needed'
    )
  fractions = {
    'train': 1.0,
    'val': config.val_fraction,
    'test': config.test_fraction,
  }
  for name, fraction in fractions.items():
    if fraction > 0 and not splits[name]:
      raise UsageError(
        f'the {name} split is empty ({sum(counts.values())} usable images '
        f'in all): use more images or a larger data.{name}_fraction'
      )


def data_report(
  index: DatasetIndex, splits: dict[str, list[Example]]
) -> dict[str, object]:
  """The JSON-able account of what was found, skipped, grouped and split."""
  return {
    'root': index.description,
    'num_files': index.num_files,
    'num_used': len(index.examples),
    'skipped': index.skipped,
    'splits': {name: class_counts(split) for name, split in splits.items()},
    'split_rule': 'content hash (BLAKE2b) of each duplicate group',
    'duplicate_groups': index.duplicate_groups,
    'num_exact_duplicate_groups': index.exact_groups,
    'num_near_duplicate_groups': len(index.duplicate_groups)
    - index.exact_groups,
    'conflicting_label_groups': index.conflicting_label_groups,
    'cross_split_duplicates': cross_split_groups(index, splits),
  }


def index_and_splits(config: ml_collections.ConfigDict, cache_path):
  """(source, index, checked splits) of the data `config` names.

  Raises:
    UsageError: on a source that cannot be opened, a missing class or an
      empty split.
  """
  source = sources.create_source(config)
  index = build_index(source, config, cache_path)
  splits = split_examples(
    index.examples, config.val_fraction, config.test_fraction
  )
  check_splits(splits, config)
  return source, index, splits


def load_splits(config: ml_collections.ConfigDict, cache_path: str | None):
  """Opens, indexes and splits the data `config` names.

  Returns:
    (source, splits, data report): the source loads the examples' pixels.

  Raises:
    UsageError: on a source that cannot be opened, a missing class or an
      empty split.
  """
  source, index, splits = index_and_splits(config, cache_path)
  if index.skipped:
    logging.warning(
      'Skipped %d unusable files (all listed in data_report.json), e.g. %s',
      len(index.skipped),
      index.skipped[:5],
    )
  return source, splits, data_report(index, splits)
