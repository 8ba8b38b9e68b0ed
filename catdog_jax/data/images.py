"""Image bytes to RGB arrays: pure functions over numpy, OpenCV and Pillow.

OpenCV decodes (libjpeg-turbo, libpng, libwebp...); Pillow only reads headers,
so that a decompression bomb is refused before a pixel is decoded.
"""

import io
import warnings

import cv2
import numpy as np
from PIL import Image
from PIL import ImageOps

# Our own `max_pixels` check replaces Pillow's bomb warning, which would
# otherwise fire (once, with no file name) on large but allowed images.
warnings.simplefilter('ignore', Image.DecompressionBombWarning)

JPEG_START = b'\xff\xd8'
JPEG_END = b'\xff\xd9'


class UnusableImageError(ValueError):
  """Bytes that cannot become a training image; the message says why."""


def header_size(data: bytes) -> tuple[int, int] | None:
  """(width, height) from the header alone, or None if Pillow can't tell."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      return image.size
  except Image.DecompressionBombError:
    raise
  except Exception:  # noqa: BLE001 - any unknown format: let OpenCV try.
    return None


def is_truncated_jpeg(data: bytes) -> bool:
  """A JPEG whose end-of-image marker is missing (the file was cut short)."""
  return data.startswith(JPEG_START) and not data.rstrip(b'\x00\r\n ').endswith(
    JPEG_END
  )


# Brands of the HEIF container (ISO BMFF) that hold HEVC-coded images: an
# iPhone's HEIC photos and their kin.
HEIF_BRANDS = frozenset(
  {b'heic', b'heix', b'hevc', b'hevx', b'heim', b'heis', b'mif1', b'msf1'}
)
# JPEGs whose short side is at least twice this decode at 1/2, 1/4 or 1/8
# of their size, keeping at least this (every model input is smaller): a
# 50-megapixel photo then costs a sixteenth of its full-size memory.
REDUCED_MIN_SIDE = 1024
_REDUCED_FLAGS = {
  8: cv2.IMREAD_REDUCED_COLOR_8,
  4: cv2.IMREAD_REDUCED_COLOR_4,
  2: cv2.IMREAD_REDUCED_COLOR_2,
}


def is_heif(data: bytes) -> bool:
  return data[4:8] == b'ftyp' and data[8:12] in HEIF_BRANDS


def reduction(size: tuple[int, int] | None) -> int:
  """The factor a JPEG of `size` (width, height) decodes reduced by: 1, 2,
  4 or 8."""
  if size is None:
    return 1
  short = min(size)
  return next((f for f in _REDUCED_FLAGS if short // f >= REDUCED_MIN_SIDE), 1)


def decode_rgb(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
  """Decodes image bytes into RGB uint8 [H, W, 3], as a photo viewer shows
  them: EXIF orientation applied, an animation's first frame.

  OpenCV's IMREAD_COLOR_RGB turns grayscale, CMYK, 16-bit and alpha images
  into 8-bit RGB; asking the decoder for RGB gives the same pixels as BGR
  then a channel swap, without the extra pass over the image. A large JPEG
  decodes reduced (`reduction`; `size` is its header's, if known). HEIC and
  HEIF photos decode through pillow-heif (the heif extra).

  Raises:
    UnusableImageError: if the bytes cannot be decoded, or a HEIC photo
      cannot be without the heif extra.
  """
  if is_heif(data):
    return decode_heif(data)
  buffer = np.frombuffer(data, np.uint8)
  factor = reduction(size or header_size(data)) if data[:2] == JPEG_START else 1
  if factor > 1:
    bgr = cv2.imdecode(buffer, _REDUCED_FLAGS[factor])
    rgb = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  else:
    rgb = cv2.imdecode(buffer, cv2.IMREAD_COLOR_RGB)
  if rgb is None:
    raise UnusableImageError('OpenCV cannot decode it as an image')
  return rgb


def decode_heif(data: bytes) -> np.ndarray:
  """A HEIC or HEIF photo as RGB uint8, upright (its EXIF orientation)."""
  try:
    import pillow_heif  # The heif extra: most installs read no HEIC.
  except ImportError:
    raise UnusableImageError(
      'a HEIC/HEIF photo: reading it needs the heif extra (pip install '
      '"catdog-jax[heif]", or pip install pillow-heif)'
    ) from None
  try:
    heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
    image = ImageOps.exif_transpose(heif.to_pillow())
  except Exception as e:  # noqa: BLE001 - libheif raises several kinds.
    raise UnusableImageError(f'cannot decode it as HEIF: {e}') from e
  return np.asarray(image.convert('RGB'))


def check_and_decode(data: bytes, max_pixels: int) -> np.ndarray:
  """Decodes bytes that pass every check, else raises UnusableImageError.

  Refused: empty files, headers claiming more than `max_pixels` (checked
  before decoding), truncated JPEGs (a half-grey photo teaches noise), and
  anything OpenCV cannot decode.
  """
  if not data:
    raise UnusableImageError('empty file')
  try:
    size = header_size(data)
  except Image.DecompressionBombError as e:
    raise UnusableImageError(f'too many pixels: {e}') from e
  if size and size[0] * size[1] > max_pixels:
    raise UnusableImageError(
      f'{size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} megapixels, '
      f'over data.max_pixels ({max_pixels / 1e6:.0f} megapixels)'
    )
  if is_truncated_jpeg(data):
    raise UnusableImageError('truncated JPEG (no end-of-image marker)')
  image = decode_rgb(data, size)
  if image.shape[0] * image.shape[1] > max_pixels:
    raise UnusableImageError(
      f'{image.shape[1]}x{image.shape[0]} is over data.max_pixels'
    )
  return image


def resize(image: np.ndarray, image_size: int) -> np.ndarray:
  """Resizes to a square, area-averaging where bilinear would alias.

  Shrunk 2x or more along an axis, bilinear sampling skips pixels and
  aliases, so area averaging is used. Below 2x, bilinear's 2-pixel support
  reads every source pixel, and it costs 0.24 ms against INTER_AREA's 0.81
  for a kaggle-orig photo (150,000 pixels on average) at 255x255.
  """
  height, width = image.shape[:2]
  if (height, width) == (image_size, image_size):
    return image
  shrink = max(height, width) / image_size
  interpolation = cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR
  return cv2.resize(
    image, (image_size, image_size), interpolation=interpolation
  )
