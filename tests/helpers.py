"""Helpers the tests share: synthetic JPEG folders and tiny configs.

Fixtures live in conftest.py; these are plain functions and constants that
any test module imports.
"""

import contextlib
import importlib.util
import io
import os
import socket
import subprocess

import cv2
import ml_collections
import numpy as np
import pytest
from PIL import Image

from catdog_jax import workdir
from catdog_jax.data import images
from catdog_jax.evaluation import predict
from configs import base

# The repository, where main.py runs; ../shared/data beside it (absent in
# a user's fresh clone: the tests that read it skip).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, os.pardir, 'shared', 'data')
# jit's compiler_options for XLA:CPU as a user's compile runs it: conftest.py
# switches the fusion emitters off for every test, to compile faster.
USERS_XLA = {'xla_cpu_use_fusion_emitters': True}


def needs(module: str, reason: str):
  """A mark that skips the test where `module` is not installed, found
  without importing it: Gradio, Playwright or PyTorch take seconds to import,
  and every pytest worker collects every test file."""
  return pytest.mark.skipif(
    importlib.util.find_spec(module) is None, reason=reason
  )


def two_cpu_devices() -> dict[str, str]:
  """The environment of a process started with two CPU devices (and the
  tests' XLA flags)."""
  flags = os.environ.get('XLA_FLAGS', '')
  return {'XLA_FLAGS': f'{flags} --xla_force_host_platform_device_count=2'}


def synthetic_image(label: int, rng: np.random.Generator, size: int = 40):
  """An RGB uint8 image a tiny CNN can learn: cats redder, dogs bluer."""
  image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
  image[..., 0 if label == 0 else 2] += 120
  return image


def load_resized(source, key: str, size: int) -> np.ndarray:
  """An indexed image decoded and resized without the input pipeline."""
  return images.resize(source.load(key), size)


def photos_as_inputs(paths, size: int) -> np.ndarray:
  """The photos as a model's batch takes them: RGB uint8 at `size`, decoded
  and resized as predict does."""
  inputs = []
  for path in paths:
    with open(path, 'rb') as f:
      inputs.append(images.resize(images.decode_rgb(f.read()), size))
  return np.stack(inputs)


def write_jpeg(path: str, image_rgb: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  ok, data = cv2.imencode('.jpg', cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
  assert ok
  with open(path, 'wb') as f:
    f.write(data.tobytes())


def write_dataset(root, layout: str, per_class: int, seed: int = 0) -> str:
  """Writes `per_class` JPEGs per class in the 'folders' or 'flat' layout."""
  rng = np.random.default_rng(seed)
  for label, name in enumerate(('cat', 'dog')):
    for i in range(per_class):
      if layout == 'folders':
        path = os.path.join(root, f'{name.capitalize()}s', f'{i}.jpg')
      else:
        path = os.path.join(root, f'{name}.{i}.jpg')
      write_jpeg(path, synthetic_image(label, rng))
  return str(root)


# A small model on small images: a run takes seconds.
TINY_OVERRIDES = {
  'data.image_size': 32,
  'data.val_fraction': 0.2,
  'data.test_fraction': 0.2,
  'data.num_workers': 2,
  'model.conv_features': (4, 8),
  'model.dense_features': (16,),
  'batch_size': 8,
  'num_train_steps': 20,
  'log_every_steps': 5,
  'eval_every_steps': 10,
  'checkpoint_every_steps': 10,
}


def override(config, **overrides) -> None:
  """Sets `overrides` ('a__b' = a.b) in place; a name that is no field of
  the config fails (as on the command line), except in the model group,
  whose fields follow the model."""
  flat = {k.replace('__', '.'): v for k, v in overrides.items()}
  known = workdir.flatten(config.to_dict())
  unknown = [k for k in flat if k not in known and not k.startswith('model.')]
  assert not unknown, f'no such config fields: {unknown}'
  config.update_from_flattened_dict(flat)


def tiny_config(root: str, **overrides):
  """The base config with TINY_OVERRIDES, then `overrides` ('a__b' = a.b)."""
  config = base.get_config()
  config.data.root = root
  config.update_from_flattened_dict(TINY_OVERRIDES)
  override(config, **overrides)
  return config


def tiny_recipe_config(root: str, **overrides):
  """tiny_config with a tiny ResNet and every part of the accuracy recipe."""
  config = tiny_config(root)
  config.model = ml_collections.ConfigDict(
    {'name': 'resnet', 'stage_sizes': (1, 1), 'widths': (4, 8)}
  )
  config.update_from_flattened_dict({
    'label_smoothing': 0.1,
    'ema_decay': 0.9,
    'eval.flip': True,
    'data.cache': True,
    'augment.crop_min_area': 0.5,
    'augment.flip': True,
    'augment.brightness': 0.2,
    'augment.contrast': 0.2,
    'augment.saturation': 0.2,
    'optimizer.name': 'adamw',
    'optimizer.learning_rate': 1e-2,
    'optimizer.schedule': 'warmup_cosine',
    'optimizer.warmup_steps': 5,
    'optimizer.weight_decay': 0.05,
    'optimizer.grad_clip_norm': 1.0,
  })  # fmt: skip
  override(config, **overrides)
  return config


def tiny_flags(root: str, **overrides) -> list[str]:
  """The same settings as main.py command-line flags."""
  settings = {**TINY_OVERRIDES, 'data.root': root}
  settings.update({k.replace('__', '.'): v for k, v in overrides.items()})
  return ['--config=configs/base.py'] + [
    f'--config.{key}={value}' for key, value in settings.items()
  ]


def decode_resized(data: bytes, size: int) -> np.ndarray:
  """Image bytes decoded and resized as every model input is."""
  return images.resize(images.decode_rgb(data), size)


@contextlib.contextmanager
def small_disk(folder, megabytes: int):
  """A tmpfs of `megabytes` mounted at `folder`: a disk that really fills.

  Mounting needs root (as CI and these machines run); elsewhere the test
  skips, saying so.
  """
  folder = str(folder)
  os.makedirs(folder, exist_ok=True)
  mounted = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', f'size={megabytes}m', 'tmpfs', folder],
    capture_output=True, text=True, check=False,
  )  # fmt: skip
  if mounted.returncode:
    pytest.skip(f'a real full disk needs a tmpfs, and mounting one failed: '
                f'{mounted.stderr.strip() or "not root"}')  # fmt: skip
  try:
    yield folder
  finally:
    subprocess.run(['umount', '-l', folder], check=False)


def fill(folder: str, leave_bytes: int) -> str:
  """Fills `folder`'s disk up to `leave_bytes` free; returns the filler."""
  path = os.path.join(folder, 'filler')
  stat = os.statvfs(folder)
  with open(path, 'ab') as f:
    size = os.path.getsize(path) + stat.f_bavail * stat.f_frsize - leave_bytes
    os.posix_fallocate(f.fileno(), 0, max(size, 1))
  return path


# --- Photos as cameras and phones save them ---------------------------------


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
  """A JPEG of `pixels` (RGB) tagged with an EXIF orientation."""
  exif = Image.Exif()
  exif[0x0112] = orientation
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'JPEG', quality=100,
                               exif=exif.tobytes())  # fmt: skip
  return buffer.getvalue()


def upright_photo() -> np.ndarray:
  """40 wide, 80 high: a red band on top, green and blue halves below."""
  up = np.zeros((80, 40, 3), np.uint8)
  up[:20] = (255, 0, 0)
  up[20:, :20] = (0, 255, 0)
  up[20:, 20:] = (0, 0, 255)
  return up


# The pixels a camera stores for an upright scene under each orientation tag.
STORED = {3: lambda up: np.rot90(up, 2), 6: lambda up: np.rot90(up, 1),
          8: lambda up: np.rot90(up, -1)}  # fmt: skip


def heic(pixels: np.ndarray, orientation: int | None = None) -> bytes:
  pillow_heif = pytest.importorskip('pillow_heif')
  pillow_heif.register_heif_opener()
  image = Image.fromarray(pixels)
  buffer = io.BytesIO()
  extra = {}
  if orientation:
    exif = Image.Exif()
    exif[0x0112] = orientation
    extra['exif'] = exif.tobytes()
  image.save(buffer, format='HEIF', quality=95, **extra)
  return buffer.getvalue()


def probe_logits(workdir) -> tuple[np.ndarray, np.ndarray]:
  """A probe run's test logits two ways: predict restoring the checkpoint
  and running the whole model on the images, and its head on the cached
  features (uncalibrated)."""
  predictor = predict.Predictor(str(workdir))
  source, splits, _ = predict.dataset.load_splits(predictor.config.data, None)
  whole_model = predictor.predict(splits['test'], source).logits
  with np.load(os.path.join(workdir, 'features_test.npz')) as cached:
    features = cached['features']
  head = predictor.variables['params']['logit']
  from_features = features @ np.asarray(head['kernel']) + head['bias']
  return whole_model, from_features[:, 0]


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]
