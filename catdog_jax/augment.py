"""Training-time augmentation on the device, inside the jitted train step.

Images arrive as float32 in [0, 1], [B, H, W, 3]; each image draws its own
crop, flip, colour factors, grayscale and blur from the step's rng; CutMix
then pastes a box of another image of the batch into some images and mixes
their labels by area. Running here rather than
in the host pipeline keeps the pipeline's uint8 batches small and lets XLA
batch the work, which on a 2-core CPU would otherwise compete with decoding.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from catdog_jax.data import augmentation

# Aspect ratios (width / height) a random resized crop may take.
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
# The largest crop box, as a multiple of the image's area: zoomed out that
# far, the image spans half the output's side.
MAX_CROP_AREA = 4.0
# What a zoomed-out crop shows beyond the image: mid-gray.
ZOOM_OUT_FILL = 0.5
# The largest blur sigma, in pixels: its kernel reaches 3 sigma each side.
MAX_BLUR_SIGMA = 4.0
# ITU-R BT.601 luma weights, for saturation jitter. NumPy, not jnp: a jnp
# array at import would start the backend before jax.distributed can.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def random_crop_box(
  rng, shape: tuple[int, int], min_area: float, max_area: float = 1.0
):
  """(top, left, height, width) of a random crop box of `min_area` to
  `max_area` times the area of an image of `shape` (H, W), in fractional
  pixels.

  The box's aspect ratio is log-uniform in CROP_ASPECT_RANGE (Inception-
  style), each side clipped to sqrt(max(max_area, 1)) of the image's. A box
  up to the image's size lies inside it; a larger one (zooming out)
  contains the image, placed at random.
  """
  height, width = shape
  area_rng, aspect_rng, y_rng, x_rng = jax.random.split(rng, 4)
  area = jax.random.uniform(area_rng, minval=min_area, maxval=max_area)
  log_aspect = jax.random.uniform(
    aspect_rng,
    minval=jnp.log(CROP_ASPECT_RANGE[0]),
    maxval=jnp.log(CROP_ASPECT_RANGE[1]),
  )
  aspect = jnp.exp(log_aspect)
  most = np.sqrt(max(max_area, 1.0))
  crop_h = jnp.clip(jnp.sqrt(area / aspect) * height, 1.0, most * height)
  crop_w = jnp.clip(jnp.sqrt(area * aspect) * width, 1.0, most * width)
  top = jax.random.uniform(y_rng) * (height - crop_h)
  left = jax.random.uniform(x_rng) * (width - crop_w)
  return top, left, crop_h, crop_w


def random_resized_crop(
  rng, image, min_area: float, size: int, mirror=False, max_area: float = 1.0
):
  """A random crop box (`random_crop_box`) resized to size x size, mirrored
  left to right where `mirror`; where the box reaches beyond the image
  (`max_area` > 1), ZOOM_OUT_FILL."""
  top, left, crop_h, crop_w = random_crop_box(
    rng, image.shape[:2], min_area, max_area
  )
  # Output pixel o samples the crop at its centre, (o + 0.5) / size of its
  # side, in the input's pixel-centre coordinates; mirrored, the columns
  # are sampled in reverse order.
  centres = jnp.arange(size) + 0.5
  rows = centres * crop_h / size + top - 0.5
  columns = centres * crop_w / size + left - 0.5
  columns = jnp.where(mirror, columns[::-1], columns)
  # Columns first, as rows of the transposed image: ending on a plain row
  # gather leaves the usual layout for the steps after (ending on the
  # transpose made the colour jitter and blur after it slower).
  height, width = image.shape[:2]
  image = sample_rows(image.transpose(1, 0, 2), columns).transpose(1, 0, 2)
  image = sample_rows(image, rows)
  if max_area <= 1:
    return image
  # Pixel centres span 0..H-1, so the image's edges are half a pixel out.
  inside = ((rows >= -0.5) & (rows <= height - 0.5))[:, None, None] & (
    (columns >= -0.5) & (columns <= width - 0.5)
  )[None, :, None]
  return jnp.where(inside, image, ZOOM_OUT_FILL)


def sample_rows(image, positions):
  """`image` [H, ...] linearly interpolated at fractional row `positions`,
  the edge rows repeated outside.

  For a crop inside the image, columns (transposed: a gather of whole rows
  is the fast one) then rows give what jax.image.scale_and_translate(
  method='linear', antialias=False) does, as gathers instead of its dense
  weight matrices: a quarter to a third of the time on a 2-core CPU
  (docs/performance.md).
  """
  below = jnp.floor(positions)
  fraction = (positions - below).reshape((-1,) + (1,) * (image.ndim - 1))
  below = below.astype(jnp.int32)
  last = image.shape[0] - 1
  lower = jnp.take(image, jnp.clip(below, 0, last), axis=0)
  upper = jnp.take(image, jnp.clip(below + 1, 0, last), axis=0)
  return lower + fraction * (upper - lower)


def color_jitter(rng, image, brightness, contrast, saturation):
  """Scales brightness, contrast and saturation by 1 +- U(amount)."""
  factors = 1.0 + jax.random.uniform(
    rng,
    (3,),
    minval=-jnp.array([brightness, contrast, saturation]),
    maxval=jnp.array([brightness, contrast, saturation]),
  )
  image = image * factors[0]
  mean = image.mean()
  image = (image - mean) * factors[1] + mean
  gray = (image @ _LUMA)[..., None]
  image = (image - gray) * factors[2] + gray
  return jnp.clip(image, 0.0, 1.0)


def to_grayscale(rng, image, probability: float):
  """The image in gray (luma in all three channels) with `probability`."""
  gray = jnp.broadcast_to((image @ _LUMA)[..., None], image.shape)
  return jnp.where(jax.random.bernoulli(rng, probability), gray, image)


def gaussian_blur(rng, image, max_sigma: float):
  """A Gaussian blur of sigma ~ U(0, max_sigma) pixels (0: the image as it
  is), separable, the border reflected."""
  sigma = jax.random.uniform(rng, maxval=max_sigma)
  radius = int(np.ceil(3 * max_sigma))
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (offsets / jnp.maximum(sigma, 1e-3)) ** 2)
  weights = weights / weights.sum()
  for axis in (0, 1):
    pads = [(0, 0)] * 3
    pads[axis] = (radius, radius)
    padded = jnp.pad(image, pads, mode='reflect')
    length = image.shape[axis]
    image = sum(
      w * jax.lax.slice_in_dim(padded, k, k + length, axis=axis)
      for k, w in enumerate(weights)
    )
  return image


def cutmix(rng, images, labels, probability: float):
  """CutMix (Yun et al., 2019): with `probability` per image, a box of
  another image of the batch pasted in, the box's area drawn uniformly.

  Returns:
    (images, targets): float targets, each label mixed with its partner's by
    the share of the image that is the partner's.
  """
  batch, height, width = images.shape[:3]
  perm_rng, apply_rng, area_rng, y_rng, x_rng = jax.random.split(rng, 5)
  partner = jax.random.permutation(perm_rng, batch)
  applied = jax.random.bernoulli(apply_rng, probability, (batch,))
  side = jnp.sqrt(jax.random.uniform(area_rng, (batch,)))
  box_h = jnp.round(side * height)
  box_w = jnp.round(side * width)
  top = jnp.floor(jax.random.uniform(y_rng, (batch,)) * (height - box_h + 1))
  left = jnp.floor(jax.random.uniform(x_rng, (batch,)) * (width - box_w + 1))
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  inside = (
    (rows >= top[:, None, None])
    & (rows < (top + box_h)[:, None, None])
    & (cols >= left[:, None, None])
    & (cols < (left + box_w)[:, None, None])
    & applied[:, None, None]
  )
  images = jnp.where(inside[..., None], images[partner], images)
  share = inside.mean(axis=(1, 2))
  labels = labels.astype(jnp.float32)
  return images, (1 - share) * labels + share * labels[partner]


def augment_image(rng, image, config: ml_collections.ConfigDict, size: int):
  """One image through the augmentations `config` enables, at size x size."""
  crop_rng, flip_rng, color_rng = jax.random.split(rng, 3)
  # Folded in, not split: the draws above stay those of earlier versions.
  gray_rng, blur_rng = jax.random.fold_in(rng, 3), jax.random.fold_in(rng, 4)
  mirror = jax.random.bernoulli(flip_rng) if config.flip else False
  if augmentation.crops(config):
    # The mirror is free there: the columns sampled in reverse order.
    image = random_resized_crop(
      crop_rng, image, config.crop_min_area, size, mirror, config.crop_max_area
    )
  else:
    if image.shape[:2] != (size, size):
      image = jax.image.resize(image, (size, size, image.shape[-1]), 'linear')
    if config.flip:
      image = jnp.where(mirror, image[:, ::-1], image)
  if config.brightness or config.contrast or config.saturation:
    image = color_jitter(
      color_rng, image, config.brightness, config.contrast, config.saturation
    )
  if config.grayscale:
    image = to_grayscale(gray_rng, image, config.grayscale)
  if config.blur:
    image = gaussian_blur(blur_rng, image, config.blur)
  return image


def augment(rng, images_bhwc, config: ml_collections.ConfigDict, size=None):
  """A batch through `augment_image`, one rng per image.

  `size` sets the output's height and width (default: the input's); with
  crops off, images are resized to it.
  """
  size = size or images_bhwc.shape[1]
  rngs = jax.random.split(rng, images_bhwc.shape[0])
  return jax.vmap(lambda r, x: augment_image(r, x, config, size))(
    rngs, images_bhwc
  )
