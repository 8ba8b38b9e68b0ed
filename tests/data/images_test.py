"""Tests for catdog_jax.images: decoding and the checks before it."""

import io
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from catdog_jax.data import images
from tests import helpers


def encode(pixels, ext='.png', params=()):
  ok, data = cv2.imencode(ext, pixels, list(params))
  assert ok
  return data.tobytes()


def test_decode_swaps_bgr_to_rgb_and_resizes():
  rgb = np.zeros((10, 20, 3), np.uint8)
  rgb[..., 0] = 255  # Pure red.
  data = encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  image = images.resize(images.decode_rgb(data), 16)
  assert image.shape == (16, 16, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[0, 0], [255, 0, 0])


def test_rgb_decoding_gives_the_pixels_of_bgr_then_swap():
  photo = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
  data = encode(photo, '.jpg')
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  np.testing.assert_array_equal(
    images.decode_rgb(data), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  )


@pytest.mark.parametrize(
  'pixels',
  [
    np.full((8, 8), 77, np.uint8),
    np.full((8, 8, 4), 77, np.uint8),
    np.full((8, 8, 3), 77 * 257, np.uint16),
  ],
  ids=['gray', 'rgba', '16bit'],
)
def test_decode_gives_three_uint8_channels(pixels):
  image = images.resize(images.decode_rgb(encode(pixels)), 8)
  assert image.shape == (8, 8, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image, 77)


def test_upper_case_and_other_formats_decode():
  pixels = np.full((4, 6, 3), 100, np.uint8)
  for ext in ('.webp', '.bmp', '.tiff'):
    lossless = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == '.webp' else []
    image = images.check_and_decode(encode(pixels, ext, lossless), 10**6)
    assert image.shape == (4, 6, 3)


@pytest.mark.parametrize(
  'data, reason',
  [
    (b'', 'empty file'),
    (b'this is text, not a picture', 'cannot decode'),
  ],
)
def test_unusable_bytes_give_a_reason(data, reason):
  with pytest.raises(images.UnusableImageError, match=reason):
    images.check_and_decode(data, 10**6)


def test_truncated_jpeg_is_refused():
  pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
  jpeg = encode(pixels, '.jpg')
  assert images.check_and_decode(jpeg, 10**6).shape == (64, 64, 3)
  with pytest.raises(images.UnusableImageError, match='truncated JPEG'):
    images.check_and_decode(jpeg[: len(jpeg) // 2], 10**6)


def test_pixel_limit_is_checked_from_the_header():
  data = encode(np.zeros((300, 400, 3), np.uint8))
  assert images.header_size(data) == (400, 300)
  with pytest.raises(images.UnusableImageError, match='over data.max_pixels'):
    images.check_and_decode(data, max_pixels=100_000)
  assert images.check_and_decode(data, max_pixels=120_000).shape[:2] == (
    300,
    400,
  )


def test_resize_averages_when_shrinking_2x_or_more():
  """1-pixel stripes shrunk 4x become grey, not aliased stripes."""
  stripes = np.zeros((64, 64, 3), np.uint8)
  stripes[:, ::2] = 255
  small = images.resize(stripes, 16)
  np.testing.assert_allclose(small, 127.5, atol=1)


def test_resize_is_bilinear_below_2x_and_when_enlarging():
  image = np.random.default_rng(0).integers(0, 256, (60, 45, 3), np.uint8)
  for size in (40, 90):
    expected = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(images.resize(image, size), expected)


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation_is_applied(orientation):
  up = helpers.upright_photo()
  data = helpers.jpeg_with_orientation(
    helpers.STORED[orientation](up), orientation
  )
  decoded = images.decode_rgb(data)
  assert decoded.shape == up.shape
  assert np.abs(decoded.astype(int) - up).mean() < 6  # JPEG's own error.


def test_an_animated_gif_gives_its_first_frame():
  frames = [Image.fromarray(np.full((30, 30, 3), v, np.uint8))
            for v in (50, 200)]  # fmt: skip
  buffer = io.BytesIO()
  frames[0].save(buffer, 'GIF', save_all=True, append_images=frames[1:],
                 duration=100, loop=0)  # fmt: skip
  first = images.check_and_decode(buffer.getvalue(), max_pixels=10_000)
  assert first.shape == (30, 30, 3) and abs(first.mean() - 50) < 2


def test_a_50_megapixel_jpeg_decodes_reduced_and_upright():
  # 8160 x 6120, stored on its side with orientation 6, as a phone does.
  width, height = 8160, 6120
  stored = np.zeros((width, height, 3), np.uint8)  # Rotated: w x h swapped.
  stored[: width // 2] = (200, 30, 30)
  data = helpers.jpeg_with_orientation(stored, 6)
  image = images.check_and_decode(data, max_pixels=50_000_000)
  # 1/4 of each side: a sixteenth of the memory, still above any input.
  assert image.shape == (height // 4, width // 4, 3)
  # Upright: the half stored first is now on the right.
  assert image[:, -10:].mean() > image[:, :10].mean() + 50


def test_a_heic_photo_is_read_upright():
  up = helpers.upright_photo()
  data = helpers.heic(helpers.STORED[6](up), orientation=6)
  assert images.is_heif(data)
  decoded = images.check_and_decode(data, max_pixels=10_000)
  assert decoded.shape == up.shape
  assert np.abs(decoded.astype(int) - up).mean() < 12  # HEVC's own error.


def test_without_the_heif_extra_a_heic_photo_says_what_to_install(
  monkeypatch,
):
  data = helpers.heic(helpers.upright_photo())
  monkeypatch.setitem(sys.modules, 'pillow_heif', None)  # Not installed.
  with pytest.raises(images.UnusableImageError, match=r'needs the heif extra'):
    images.decode_rgb(data)
