"""The exported resize gives the input pipeline's pixels, not nearly them:
every branch of OpenCV's uint8 resize that `data.images.resize` reaches."""

import cv2
import jax
import numpy as np
import pytest

from catdog_jax.data import images
from catdog_jax.serving import resize
from tests import helpers

SIZE = 32


@pytest.fixture(scope='module')
def exported():
  """The resize to 32 px as the export writes it, read back from its bytes."""
  return jax.export.deserialize(resize.export(SIZE, ('cpu',)).serialize())


def photo(height: int, width: int, seed: int) -> np.ndarray:
  """Smooth like a photo (sums land near rounding edges) or plain noise."""
  rng = np.random.default_rng(seed)
  noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  return cv2.GaussianBlur(noise, (5, 5), 2) if seed % 2 else noise


@pytest.mark.parametrize(
  'height, width',
  [
    (75, 100),  # Area, non-integer scales.
    (100, 75),
    (71, 97),
    (64, 64),  # Area, 2 x 2 blocks: rounded half up.
    (96, 64),  # Area, integer 3 x 2 blocks: summed, times 1/6.
    (96, 96),
    (50, 40),  # Linear, shrinking less than 2x.
    (20, 25),  # Linear, growing: the edge rows' vertical rounding.
    (80, 20),  # Area where one axis grows: OpenCV's bilinear emulation.
    (20, 80),
    (32, 32),  # Already the size.
  ],
)
def test_the_pixels_are_opencvs(exported, height, width):
  for seed in (0, 1):
    image = photo(height, width, seed)
    np.testing.assert_array_equal(
      np.asarray(exported.call(image)), images.resize(image, SIZE)
    )


def test_tracing_without_float64_is_refused():
  with pytest.raises(RuntimeError, match='jax.enable_x64'):
    jax.jit(lambda x: resize.resize(x, SIZE))(np.zeros((40, 40, 3), np.uint8))


@pytest.mark.optimized  # XLA's fusions, as a user's call compiles them.
def test_photos_at_a_real_size_keep_every_last_bit():
  """At 224 px a sum lands within a rounding of .5 about once in 100,000
  pixels (once a photo in a third of kaggle-orig's): an FMA or a reciprocal
  in place of OpenCV's separate roundings shows over these 16 photos."""
  exported = resize.export(224, ('cpu',))
  call = jax.jit(exported.call, compiler_options=helpers.USERS_XLA)
  rng = np.random.default_rng(0)
  for shape in [(375, 500, 3), (500, 374, 3)] * 8:
    image = cv2.GaussianBlur(rng.integers(0, 256, shape, np.uint8), (9, 9), 2)
    np.testing.assert_array_equal(
      np.asarray(call(image)), images.resize(image, 224)
    )
