"""Training-time augmentation on the device, inside the jitted train step.

Images arrive as float32 in [0, 1], [B, H, W, 3]; each image draws its own
crop, flip and colour factors from the step's rng. Running here rather than
in the host pipeline keeps the pipeline's uint8 batches small and lets XLA
batch the work, which on a 2-core CPU would otherwise compete with decoding.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from catdog_jax.errors import UsageError

# Aspect ratios (width / height) a random resized crop may take.
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
# ITU-R BT.601 luma weights, for saturation jitter. NumPy, not jnp: a jnp
# array at import would start the backend before jax.distributed can.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on an `augment` config that cannot work."""
  if not 0 < config.crop_min_area <= 1:
    raise UsageError(
      'augment.crop_min_area must be in (0, 1] (1: no crop), got '
      f'{config.crop_min_area}'
    )


def crops(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` (the `augment` group) asks for random resized crops."""
  return config.crop_min_area < 1


def is_enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` (the `augment` group) changes any image."""
  return bool(
    crops(config)
    or config.flip
    or config.brightness
    or config.contrast
    or config.saturation
  )


def random_resized_crop(rng, image, min_area: float, size: int):
  """A random crop of `min_area`..100% of the area, resized to size x size.

  The crop's aspect ratio is log-uniform in CROP_ASPECT_RANGE (Inception-
  style), clipped to fit inside the image.
  """
  height, width = image.shape[:2]
  area_rng, aspect_rng, y_rng, x_rng = jax.random.split(rng, 4)
  area = jax.random.uniform(area_rng, minval=min_area, maxval=1.0)
  log_aspect = jax.random.uniform(
    aspect_rng,
    minval=jnp.log(CROP_ASPECT_RANGE[0]),
    maxval=jnp.log(CROP_ASPECT_RANGE[1]),
  )
  aspect = jnp.exp(log_aspect)
  crop_h = jnp.clip(jnp.sqrt(area / aspect) * height, 1.0, height)
  crop_w = jnp.clip(jnp.sqrt(area * aspect) * width, 1.0, width)
  top = jax.random.uniform(y_rng) * (height - crop_h)
  left = jax.random.uniform(x_rng) * (width - crop_w)
  scale = jnp.stack([size / crop_h, size / crop_w])
  translation = -jnp.stack([top, left]) * scale
  return jax.image.scale_and_translate(
    image,
    (size, size, image.shape[-1]),
    spatial_dims=(0, 1),
    scale=scale,
    translation=translation,
    method='linear',
    antialias=False,
  )


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


def augment_image(rng, image, config: ml_collections.ConfigDict, size: int):
  """One image through the augmentations `config` enables, at size x size."""
  crop_rng, flip_rng, color_rng = jax.random.split(rng, 3)
  if crops(config):
    image = random_resized_crop(crop_rng, image, config.crop_min_area, size)
  elif image.shape[:2] != (size, size):
    image = jax.image.resize(image, (size, size, image.shape[-1]), 'linear')
  if config.flip:
    flip = jax.random.bernoulli(flip_rng)
    image = jnp.where(flip, image[:, ::-1], image)
  if config.brightness or config.contrast or config.saturation:
    image = color_jitter(
      color_rng, image, config.brightness, config.contrast, config.saturation
    )
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
