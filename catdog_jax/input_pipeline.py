"""Input pipeline: find labelled images, split them by content, decode, batch.

Knows nothing about models. Two folder layouts are recognised, per file:
class folders (`cats/`, `Dog/`, Microsoft's `PetImages/Cat/`; any case, at
any depth) and Kaggle's flat names (`cat.123.jpg`). Class 0 is cat, 1 is dog.

Splits are decided by each file's content hash, so the same bytes never land
in two splits and adding files never moves existing ones.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterator
from collections.abc import Sequence

import cv2
import grain
import ml_collections
import numpy as np

from catdog_jax.errors import UsageError

CLASS_NAMES = ('cat', 'dog')
SPLITS = ('train', 'val', 'test')
# Extensions OpenCV's image decoders read; matched case-insensitively.
IMAGE_EXTENSIONS = frozenset(
  {
    '.avif',
    '.bmp',
    '.dib',
    '.gif',
    '.hdr',
    '.jp2',
    '.jpe',
    '.jpeg',
    '.jpg',
    '.pbm',
    '.pfm',
    '.pgm',
    '.pic',
    '.png',
    '.pnm',
    '.ppm',
    '.pxm',
    '.ras',
    '.sr',
    '.tif',
    '.tiff',
    '.webp',
  }
)
_FOLDER_LABELS = {'cat': 0, 'cats': 0, 'dog': 1, 'dogs': 1}


@dataclasses.dataclass(frozen=True)
class Example:
  """One labelled image file: absolute path, class id, content digest."""

  path: str
  label: int
  digest: str


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


def list_labelled_files(root: str) -> list[tuple[str, int]]:
  """Sorted (relative path, label) of every labelled image under `root`."""
  found = []
  for folder, subfolders, filenames in os.walk(root):
    subfolders.sort()
    for filename in sorted(filenames):
      path = os.path.relpath(os.path.join(folder, filename), root)
      label = label_from_path(path)
      if label is not None and is_image_file(filename):
        found.append((path, label))
  return found


def file_digest(path: str) -> str:
  """Hex BLAKE2b digest of the file's bytes."""
  with open(path, 'rb') as f:
    return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def find_examples(root: str, num_workers: int = 0) -> list[Example]:
  """Indexes the labelled images under `root`, hashing their contents.

  Raises:
    UsageError: if `root` is not a folder, or holds no labelled images.
  """
  if not os.path.isdir(root):
    raise UsageError(f'data.root {root!r} is not a folder')
  root = os.path.abspath(root)
  files = list_labelled_files(root)
  if not files:
    raise UsageError(
      f'no labelled images under {root!r}: expected class folders '
      '(cats/ and dogs/, Cat/ and Dog/) or names like cat.1.jpg, dog.1.jpg'
    )
  paths = [os.path.join(root, path) for path, _ in files]
  with concurrent.futures.ThreadPoolExecutor(num_workers or None) as pool:
    digests = list(pool.map(file_digest, paths))
  return [
    Example(path, label, digest)
    for path, (_, label), digest in zip(paths, files, digests, strict=True)
  ]


def split_of(digest: str, val_fraction: float, test_fraction: float) -> str:
  """Split of a file from its content digest alone.

  The digest maps to a uniform number u in [0, 1): test takes the lowest
  `test_fraction`, val the next `val_fraction`. Each class therefore gets
  each fraction in expectation (stratified without looking at file order),
  and changing `val_fraction` never moves a test file.
  """
  u = int(digest[:16], 16) / 2**64
  if u < test_fraction:
    return 'test'
  if u < test_fraction + val_fraction:
    return 'val'
  return 'train'


def split_examples(
  examples: Sequence[Example], val_fraction: float, test_fraction: float
) -> dict[str, list[Example]]:
  """Groups examples into train/val/test by `split_of`."""
  splits = {name: [] for name in SPLITS}
  for example in examples:
    splits[split_of(example.digest, val_fraction, test_fraction)].append(
      example
    )
  return splits


def class_counts(examples: Sequence[Example]) -> dict[str, int]:
  counts = collections.Counter(example.label for example in examples)
  return {name: counts[i] for i, name in enumerate(CLASS_NAMES)}


def check_splits(
  splits: dict[str, list[Example]], config: ml_collections.ConfigDict
) -> None:
  """Raises UsageError unless every class and every asked-for split exist."""
  counts = class_counts([e for split in splits.values() for e in split])
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
        f'the {name} split is empty ({len(splits["train"])} train images '
        f'in all): use more images or a larger data.{name}_fraction'
      )


def load_splits(config: ml_collections.ConfigDict) -> dict[str, list[Example]]:
  """Indexes `config.root` and splits it; raises UsageError on bad data."""
  examples = find_examples(config.root, config.num_workers)
  splits = split_examples(examples, config.val_fraction, config.test_fraction)
  check_splits(splits, config)
  return splits


def data_report(
  root: str, splits: dict[str, list[Example]]
) -> dict[str, object]:
  """The JSON-able summary of what was found and how it was split."""
  return {
    'root': os.path.abspath(root),
    'num_files': sum(len(split) for split in splits.values()),
    'splits': {name: class_counts(split) for name, split in splits.items()},
    'split_rule': 'content hash (BLAKE2b of the file bytes)',
  }


# --- Decoding ---------------------------------------------------------------


def decode_image(data: bytes, image_size: int) -> np.ndarray:
  """Decodes image bytes into RGB uint8 of shape (image_size, image_size, 3).

  OpenCV's IMREAD_COLOR turns grayscale, CMYK, 16-bit and alpha images into
  8-bit BGR; the channels are then swapped to RGB.

  Raises:
    ValueError: if OpenCV cannot decode the bytes.
  """
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if bgr is None:
    raise ValueError('OpenCV cannot decode it as an image')
  return cv2.cvtColor(resize(bgr, image_size), cv2.COLOR_BGR2RGB)


def resize(image: np.ndarray, image_size: int) -> np.ndarray:
  """Resizes to a square; area averaging when shrinking avoids aliasing."""
  height, width = image.shape[:2]
  if (height, width) == (image_size, image_size):
    return image
  shrinking = height * width > image_size * image_size
  interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
  return cv2.resize(
    image, (image_size, image_size), interpolation=interpolation
  )


def load_example(example: Example, image_size: int) -> dict[str, np.ndarray]:
  """Reads and decodes one file into {'image', 'label'}."""
  with open(example.path, 'rb') as f:
    data = f.read()
  try:
    image = decode_image(data, image_size)
  except ValueError as e:
    raise ValueError(f'{example.path}: {e}') from e
  return {'image': image, 'label': np.int32(example.label)}


# --- Batching ---------------------------------------------------------------


def create_train_iterator(
  examples: Sequence[Example],
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
  the number of shards. Its state (`get_state`) is checkpointable.

  Args:
    examples: the training examples.
    config: the `data` config (image_size, num_workers, prefetch_batches).
    batch_size: examples per batch on this shard.
    seed: seed of the shuffle.
    shard_index: which shard this process reads.
    shard_count: number of shards (processes).
  """
  ds = grain.MapDataset.source(list(examples)).seed(seed).shuffle().repeat()
  ds = ds[shard_index::shard_count]
  ds = ds.map(functools.partial(load_example, image_size=config.image_size))
  read_options = grain.ReadOptions(
    num_threads=config.num_workers or os.cpu_count(),
    prefetch_buffer_size=config.prefetch_batches * batch_size,
  )
  ds = ds.to_iter_dataset(read_options).batch(batch_size, drop_remainder=True)
  return iter(ds)


def eval_batches(
  examples: Sequence[Example],
  config: ml_collections.ConfigDict,
  *,
  batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `examples` in order, in full batches with a `mask`.

  The last batch is padded (mask False) so that every batch has one shape
  and every example is evaluated exactly once.
  """
  ds = grain.MapDataset.source(list(examples)).map(
    functools.partial(load_example, image_size=config.image_size)
  )
  read_options = grain.ReadOptions(
    num_threads=config.num_workers or os.cpu_count(),
    prefetch_buffer_size=config.prefetch_batches * batch_size,
  )
  ds = ds.to_iter_dataset(read_options).batch(batch_size)
  for batch in ds:
    yield pad_batch(batch, batch_size)


def pad_batch(
  batch: dict[str, np.ndarray], batch_size: int
) -> dict[str, np.ndarray]:
  """Pads every array to `batch_size` rows and adds a boolean `mask`."""
  num_real = len(batch['label'])
  padding = batch_size - num_real
  padded = {
    key: np.concatenate([value, np.zeros_like(value[:1]).repeat(padding, 0)])
    for key, value in batch.items()
  }
  padded['mask'] = np.arange(batch_size) < num_real
  return padded
