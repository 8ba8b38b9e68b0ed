"""Where images come from: a folder of files, or a prepared TFDS dataset.

A source names its items by string keys (a path relative to the folder, or a
TFDS record index), checks and reads one item for indexing (`inspect`), and
loads one item's pixels for the input pipeline (`load`). Everything
downstream (duplicates, splits, batches) is the same for both.
"""

import os
import stat

import jax
import ml_collections
import numpy as np

from catdog_jax.classes import CLASS_NAMES
from catdog_jax.data import download
from catdog_jax.data import images
from catdog_jax.errors import UsageError

# Extensions OpenCV's image decoders read, and HEIC/HEIF (images.py);
# matched case-insensitively.
IMAGE_EXTENSIONS = frozenset({
  '.avif', '.bmp', '.dib', '.gif', '.hdr', '.heic', '.heif', '.jp2', '.jpe',
  '.jpeg', '.jpg', '.pbm', '.pfm', '.pgm', '.pic', '.png', '.pnm', '.ppm',
  '.pxm', '.ras', '.sr', '.tif', '.tiff', '.webp',
})  # fmt: skip
_FOLDER_LABELS = {'cat': 0, 'cats': 0, 'dog': 1, 'dogs': 1}


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


class FolderSource:
  """Labelled image files under a folder, in either layout, at any depth."""

  def __init__(self, root: str):
    if not root or not os.path.isdir(root):
      raise UsageError(f'data.root {root!r} is not a folder')
    self.root = os.path.abspath(root)
    self.description = self.root

  def list_keys(self) -> tuple[list[str], list[dict[str, str]]]:
    """Sorted relative paths of labelled image files, and folders to report.

    Folders named like images are searched, and reported as skipped.
    """
    keys, skipped = [], []
    for folder, subfolders, filenames in os.walk(self.root):
      subfolders.sort()
      for name in subfolders:
        if is_image_file(name):
          path = os.path.relpath(os.path.join(folder, name), self.root)
          skipped.append({'path': path, 'reason': 'a folder, not an image'})
      for name in sorted(filenames):
        path = os.path.relpath(os.path.join(folder, name), self.root)
        if is_image_file(name) and label_from_path(path) is not None:
          keys.append(path)
    return keys, skipped

  def cache_key(self, key: str) -> dict[str, int] | None:
    """Size and mtime: a cached record is valid while both are unchanged."""
    try:
      info = os.stat(os.path.join(self.root, key))
    except OSError:
      return None
    return {'size': info.st_size, 'mtime_ns': info.st_mtime_ns}

  def inspect(self, key: str, max_pixels: int):
    """(RGB image, file bytes, label); raises OSError or UnusableImageError."""
    path = os.path.join(self.root, key)
    if not stat.S_ISREG(os.stat(path).st_mode):
      raise images.UnusableImageError('not a regular file')
    with open(path, 'rb') as f:
      data = f.read()
    return images.check_and_decode(data, max_pixels), data, label_from_path(key)

  def load(self, key: str) -> np.ndarray:
    with open(os.path.join(self.root, key), 'rb') as f:
      return images.decode_rgb(f.read())


class FilesSource(FolderSource):
  """Given image files, keyed by absolute path; labels from their paths."""

  def __init__(self, paths: list[str]):
    self.root = ''  # os.path.join('', key) is the key itself.
    self.description = f'{len(paths)} files'
    self._paths = list(paths)

  def list_keys(self) -> tuple[list[str], list[dict[str, str]]]:
    return list(self._paths), []


class TfdsSource:
  """A prepared TFDS dataset, read through `tfds.data_source` (array_record).

  Reading needs no TensorFlow; TFDS decodes the images. Preparing the data
  (a download) is a separate step: see README.md.
  """

  def __init__(self, name: str, split: str, data_dir: str | None):
    try:
      # Imported here: slow to import, and only this source needs it.
      import tensorflow_datasets as tfds
    except ImportError as e:
      raise UsageError(
        'data.source=tfds needs tensorflow-datasets: pip install -e ".[tfds]"'
      ) from e
    try:
      self._records = tfds.data_source(
        name, split=split, data_dir=data_dir, download=False
      )
    except Exception as e:  # noqa: BLE001 - TFDS raises many kinds here.
      raise UsageError(
        f'TFDS dataset {name!r} is not prepared in '
        f'{data_dir or "~/tensorflow_datasets"} ({type(e).__name__}); '
        'prepare it (README.md, "TFDS") or train from a folder with '
        '--config.data.source=folder --config.data.root=PATH'
      ) from e
    self.description = f'tfds:{name}/{split}'

  def list_keys(self) -> tuple[list[str], list[dict[str, str]]]:
    return [str(i) for i in range(len(self._records))], []

  def cache_key(self, key: str) -> dict[str, str]:
    del key  # Prepared TFDS data does not change under a name and version.
    return {'source': self.description}

  def inspect(self, key: str, max_pixels: int):
    """(RGB image, None, label); raises UnusableImageError."""
    record = self._records[int(key)]
    image = self._rgb(record['image'])
    if image.shape[0] * image.shape[1] > max_pixels:
      raise images.UnusableImageError('over data.max_pixels')
    return image, None, int(record['label'])

  def load(self, key: str) -> np.ndarray:
    return self._rgb(self._records[int(key)]['image'])

  @staticmethod
  def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[-1] == 3:
      return image
    if image.ndim == 2 or image.shape[-1] == 1:
      return np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
    return image[..., :3]


def create_source(config: ml_collections.ConfigDict):
  """The source named by `config.source`: 'folder' or 'tfds'.

  A folder source with no `config.root` reads Microsoft's PetImages,
  fetched into `config.download_dir` the first time.
  """
  if config.source == 'folder':
    if config.root:
      return FolderSource(config.root)
    return FolderSource(download.fetch_petimages(config, jax.process_index()))
  if config.source == 'tfds':
    return TfdsSource(config.name, config.tfds_split, config.tfds_data_dir)
  raise UsageError(
    f'unknown data.source {config.source!r}; known: folder, tfds'
  )
