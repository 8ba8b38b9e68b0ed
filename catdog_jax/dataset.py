"""Finding, checking, de-duplicating and splitting labelled image files.

Two folder layouts are recognised, per file: class folders (`cats/`, `Dog/`,
Microsoft's `PetImages/Cat/`; any case, at any depth) and Kaggle's flat names
(`cat.123.jpg`). Class 0 is cat, 1 is dog.

Every file is read and decoded once when indexed; unusable ones are skipped
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
import stat
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from catdog_jax import duplicates
from catdog_jax import images
from catdog_jax.errors import UsageError

CLASS_NAMES = ('cat', 'dog')
SPLITS = ('train', 'val', 'test')
# Extensions OpenCV's image decoders read; matched case-insensitively.
IMAGE_EXTENSIONS = frozenset({
    '.avif', '.bmp', '.dib', '.gif', '.hdr', '.jp2', '.jpe', '.jpeg', '.jpg',
    '.pbm', '.pfm', '.pgm', '.pic', '.png', '.pnm', '.ppm', '.pxm', '.ras',
    '.sr', '.tif', '.tiff', '.webp',
})  # fmt: skip
_FOLDER_LABELS = {'cat': 0, 'cats': 0, 'dog': 1, 'dogs': 1}
CACHE_VERSION = 1
CACHE_FILENAME = 'index_cache.json'


@dataclasses.dataclass(frozen=True)
class Example:
  """One usable labelled image: absolute path, class id, split key.

  `split_key` is the content digest of the first file of its duplicate group
  (its own digest when it has no duplicates).
  """

  path: str
  label: int
  split_key: str


@dataclasses.dataclass
class DatasetIndex:
  """What indexing found under `root`."""

  root: str
  num_files: int
  examples: list[Example]
  skipped: list[dict[str, str]]  # {'path': relative, 'reason': why}
  duplicate_groups: list[list[str]]  # relative paths, groups of 2 or more
  exact_groups: int
  conflicting_label_groups: list[list[str]]


# --- Finding files ------------------------------------------------------------


def label_from_path(relative_path: str) -> int | None:
  """Class id from the nearest class folder, else the Kaggle flat name."""
  *folders, filename = relative_path.split(os.sep)
  for folder in reversed(folders):
    if folder.lower() in _FOLDER_LABELS:
      return _FOLDER_LABELS[folder.lower()]
  prefix = filename.lower().split('.', 1)[0]
  if '.' in filename and prefix in ('cat', 'dog'):
    return CLASS_NAMES.index(prefix)
  return None


def is_image_file(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def list_labelled_files(root: str) -> tuple[list[tuple[str, int]], list[str]]:
  """Labelled image names under `root`, and folders named like images.

  Returns:
    Sorted (relative path, label) pairs, and the relative paths of folders
    whose names end in an image extension (searched, but reported).
  """
  found, image_named_folders = [], []
  for folder, subfolders, filenames in os.walk(root):
    subfolders.sort()
    for name in subfolders:
      if is_image_file(name):
        image_named_folders.append(
          os.path.relpath(os.path.join(folder, name), root)
        )
    for filename in sorted(filenames):
      path = os.path.relpath(os.path.join(folder, filename), root)
      label = label_from_path(path)
      if label is not None and is_image_file(filename):
        found.append((path, label))
  return found, image_named_folders


# --- Checking files -----------------------------------------------------------


def digest(data: bytes) -> str:
  return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_key(path: str) -> dict[str, int] | None:
  """Size and mtime that key the cache; None when the file can't be stat'ed."""
  try:
    info = os.stat(path)
  except OSError:
    return None
  return {'size': info.st_size, 'mtime_ns': info.st_mtime_ns}


def inspect_file(path: str, max_pixels: int) -> dict[str, object]:
  """Reads, checks and fingerprints one file; never raises.

  Returns:
    {'digest', 'pixel_digest', 'phash'} for a usable image, else
    {'reason'}; both with the file's size and mtime when it has them.
  """
  key = file_key(path) or {}
  try:
    if not stat.S_ISREG(os.stat(path).st_mode):
      return {**key, 'reason': 'not a regular file'}
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    return {**key, 'reason': f'cannot read: {e.strerror or e}'}
  try:
    image = images.check_and_decode(data, max_pixels)
  except images.UnusableImageError as e:
    return {**key, 'reason': str(e)}
  except Exception as e:  # noqa: BLE001 - a decoder bug must not stop a run.
    return {**key, 'reason': f'cannot decode: {type(e).__name__}: {e}'}
  return {
    **key,
    'digest': digest(data),
    'pixel_digest': digest(np.ascontiguousarray(image).data),
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
  temporary = f'{cache_path}.tmp'
  with open(temporary, 'w') as f:
    json.dump(
      {'version': CACHE_VERSION, 'max_pixels': max_pixels, 'files': records}, f
    )
  os.replace(temporary, cache_path)


def inspect_files(
  root: str,
  relative_paths: Sequence[str],
  max_pixels: int,
  num_workers: int,
  cache_path: str | None,
) -> dict[str, dict]:
  """`inspect_file` for every path, reusing cached records that still match."""
  cached = read_cache(cache_path, max_pixels)
  records, todo = {}, []
  for path in relative_paths:
    record = cached.get(path)
    key = file_key(os.path.join(root, path))
    if record and key and all(record.get(k) == v for k, v in key.items()):
      records[path] = record
    else:
      todo.append(path)
  logging.info(
    'Indexing %d files (%d cached) under %s.',
    len(relative_paths),
    len(records),
    root,
  )
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(num_workers or None) as pool:
    results = pool.map(
      lambda p: inspect_file(os.path.join(root, p), max_pixels), todo
    )
    for done, (path, record) in enumerate(
      zip(todo, results, strict=True), start=1
    ):
      records[path] = record
      if done % 2000 == 0 or done == len(todo):
        rate = done / (time.perf_counter() - start)
        logging.info(
          'Indexed %d/%d new files (%.0f files/s).', done, len(todo), rate
        )
  if cache_path and todo:
    write_cache(cache_path, max_pixels, records)
  return records


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


def build_index(
  config: ml_collections.ConfigDict, cache_path: str | None = None
) -> DatasetIndex:
  """Finds, checks and groups the labelled images under `config.root`.

  Raises:
    UsageError: if `config.root` is not a folder.
  """
  if not config.root or not os.path.isdir(config.root):
    raise UsageError(f'data.root {config.root!r} is not a folder')
  root = os.path.abspath(config.root)
  files, image_named_folders = list_labelled_files(root)
  records = inspect_files(
    root,
    [p for p, _ in files],
    config.max_pixels,
    config.num_workers,
    cache_path,
  )
  skipped = [
    {'path': p, 'reason': 'a folder, not an image file'}
    for p in image_named_folders
  ]
  skipped += [
    {'path': p, 'reason': records[p]['reason']}
    for p, _ in files
    if 'reason' in records[p]
  ]
  usable = [(p, label) for p, label in files if 'reason' not in records[p]]
  usable_records = [records[p] for p, _ in usable]
  group_of = duplicate_group_ids(usable_records, config.near_duplicate_bits)

  members = collections.defaultdict(list)
  for i, group in enumerate(group_of):
    members[group].append(i)
  examples = [
    Example(
      os.path.join(root, path),
      label,
      usable_records[members[group_of[i]][0]]['digest'],
    )
    for i, (path, label) in enumerate(usable)
  ]
  groups = [m for m in members.values() if len(m) > 1]
  return DatasetIndex(
    root=root,
    num_files=len(files) + len(image_named_folders),
    examples=examples,
    skipped=skipped,
    duplicate_groups=[[usable[i][0] for i in m] for m in groups],
    exact_groups=sum(
      len({usable_records[i]['pixel_digest'] for i in m}) == 1 for m in groups
    ),
    conflicting_label_groups=[
      [usable[i][0] for i in m]
      for m in groups
      if len({usable[i][1] for i in m}) > 1
    ],
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


def class_counts(examples: Sequence[Example]) -> dict[str, int]:
  counts = collections.Counter(example.label for example in examples)
  return {name: counts[i] for i, name in enumerate(CLASS_NAMES)}


def cross_split_groups(
  index: DatasetIndex, splits: dict[str, list[Example]]
) -> int:
  """Duplicate groups whose members landed in more than one split."""
  split_by_path = {
    os.path.relpath(e.path, index.root): name
    for name, split in splits.items()
    for e in split
  }
  return sum(
    len({split_by_path[p] for p in group}) > 1
    for group in index.duplicate_groups
  )


def check_splits(
  splits: dict[str, list[Example]], config: ml_collections.ConfigDict
) -> None:
  """Raises UsageError unless both classes and every asked-for split exist."""
  counts = class_counts([e for split in splits.values() for e in split])
  if not any(counts.values()):
    raise UsageError(
      f'no usable labelled images under {config.root!r}: expected class '
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
    'root': index.root,
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


def load_splits(
  config: ml_collections.ConfigDict, cache_path: str | None = None
) -> tuple[dict[str, list[Example]], dict[str, object]]:
  """Indexes and splits `config.root`; returns the splits and data report.

  Raises:
    UsageError: on a missing folder, a missing class or an empty split.
  """
  index = build_index(config, cache_path)
  splits = split_examples(
    index.examples, config.val_fraction, config.test_fraction
  )
  check_splits(splits, config)
  if index.skipped:
    logging.warning(
      'Skipped %d unusable files (all listed in data_report.json), e.g. %s',
      len(index.skipped),
      index.skipped[:5],
    )
  return splits, data_report(index, splits)
