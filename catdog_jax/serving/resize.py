"""The input pipeline's resize (`data.images.resize`) as JAX operations on a
photo of any height and width, so that an exported model takes the photo as
it is and gives predict's answer.

`images.resize` asks OpenCV for INTER_AREA when the photo shrinks 2x or more
along its longer side, else INTER_LINEAR. Each is written here as OpenCV
computes it for uint8 RGB, operation for operation, so that the pixels are
the same, not merely close (one level in a few pixels moves p(dog) by up to
1e-3 near 0.5; tests/serving/resize_test.py compares with cv2.resize):

- INTER_AREA, shrinking along both axes: each output pixel sums the source
  pixels its area covers, cut pixels weighted by the part inside (parts of
  1/1000 of a pixel or less dropped), along each row and then down, in
  float32 in source order, each product rounded before it is added; 2 x 2
  blocks round half up, the rest half to even.
- INTER_LINEAR (and INTER_AREA where an axis grows): two taps per axis with
  11-bit fixed-point weights, exact integer sums along the rows, then
  OpenCV's vector rounding down the columns.

Two things XLA does on its own would change the last bit, and are kept out:
it fuses a multiply and the add after it into one FMA (the products are
taken in float64 and rounded, so tracing needs jax_enable_x64), and it turns
a division by one number into a multiplication by its reciprocal.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

# OpenCV's fixed-point weights: 11 bits (INTER_RESIZE_COEF_BITS).
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def export(size: int, platforms) -> jax.export.Exported:
  """`resize` to `size` for a photo of any height and width, exported."""
  photo = jax.ShapeDtypeStruct(
    jax.export.symbolic_shape('height, width, 3'), jnp.uint8
  )
  with jax.enable_x64(True):
    return jax.export.export(
      jax.jit(functools.partial(resize, size=size)), platforms=platforms
    )(photo)


def resize(image, size: int):
  """uint8 [H, W, 3] (H and W may be symbolic) -> uint8 [size, size, 3], as
  `data.images.resize` gives it. Traced with jax_enable_x64 (`export`)."""
  if not jax.config.jax_enable_x64:
    raise RuntimeError('resize needs jax.enable_x64(True) while tracing')
  # Arrays, not dimensions: symbolic ones cannot be compared with a size.
  height, width = _as_int(image.shape[0]), _as_int(image.shape[1])
  shrinks_2x = jnp.maximum(height, width) >= 2 * size
  shrinks_both = (height >= size) & (width >= size)
  return lax.switch(
    jnp.where(shrinks_2x, jnp.where(shrinks_both, 2, 1), 0),
    (
      lambda x: _fixed_point(x, size, area_mode=False),
      lambda x: _fixed_point(x, size, area_mode=True),
      lambda x: _area(x, size),
    ),
    image,
  )


def _area(image, size: int):
  """INTER_AREA when both axes shrink, in OpenCV's order of float32
  operations: along each row, then down the columns, each sum taken in
  source order. Where both scales are integers OpenCV sums each block
  exactly instead and multiplies by 1 / its area."""
  height, width = _as_int(image.shape[0]), _as_int(image.shape[1])
  integer = (height % size == 0) & (width % size == 0)
  x = image.astype(jnp.float32)
  x = _area_pass(x, image.shape[1], size, axis=1, whole=integer)
  x = _area_pass(x, image.shape[0], size, axis=0, whole=integer)
  area = (height // size) * (width // size)
  x = jnp.where(integer, _product(x, _divide(jnp.ones_like(area), area)), x)
  # 2 x 2 blocks round half up (OpenCV's vector code), the rest to even.
  two_by_two = (height == 2 * size) & (width == 2 * size)
  rounded = jnp.where(two_by_two, jnp.floor(x + 0.5), jnp.round(x))
  return jnp.clip(rounded, 0, 255).astype(jnp.uint8)


def _as_int(dimension):
  """A dimension (perhaps symbolic) as an int32 array."""
  return jnp.asarray(dimension, jnp.int32)


def _area_pass(x, n, m: int, axis: int, whole):
  """x with `axis` (length n) shrunk to m: output i = sum over the source
  pixels j its interval covers of x[j] * share(i, j), added one source
  pixel at a time from the first, as OpenCV's ResizeArea does; with
  `whole`, the plain sum of the pixels (share 1)."""
  i = jnp.arange(m, dtype=jnp.int32)
  n = _as_int(n)
  first = (i * n) // m  # The source pixel output i starts in.
  most = (n + m - 1) // m + 1  # Source pixels an output can touch.

  def add(k, total):
    j = jnp.minimum(first + k, n - 1)
    share = _share(i, j, n, m)
    weight = jnp.where(whole, jnp.where(share > 0, 1.0, 0.0), share)
    weight = jnp.where(first + k < n, weight, 0.0)
    shape = [1] * x.ndim
    shape[axis] = m
    return total + _product(jnp.take(x, j, axis=axis), weight.reshape(shape))

  start = jnp.zeros(x.shape[:axis] + (m,) + x.shape[axis + 1 :], x.dtype)
  return lax.fori_loop(0, most, add, start)


def _divide(numerator, denominator):
  """numerator / denominator (integers) in float32, rounded as IEEE division
  rounds. XLA turns a division by one number into a multiplication by its
  reciprocal, which rounds otherwise (in half the cases); a denominator as
  large as the numerator, its zero product included, is not one number."""
  numerator = numerator.astype(jnp.float32)
  denominator = jnp.asarray(denominator).astype(jnp.float32)
  return numerator / (denominator + numerator * 0.0)


def _product(a, b):
  """a * b in float32, rounded by itself as OpenCV rounds it before adding.
  Taken in float64 (exact for two float32s) and then rounded: a float32
  multiply would be fused with the add after it into one FMA, which rounds
  once. Needs jax_enable_x64 while tracing (`export` sets it)."""
  exact = a.astype(jnp.float64) * b.astype(jnp.float64)
  return exact.astype(jnp.float32)


def _share(i, j, n, m: int):
  """The share of output i's source interval that source pixel j covers.
  In units of 1/m of a source pixel, output i spans [i n, (i + 1) n) and
  source j spans [j m, (j + 1) m): all integers, so exact."""
  overlap = jnp.maximum(
    jnp.minimum((j + 1) * m, (i + 1) * n) - jnp.maximum(j * m, i * n), 0
  )
  # OpenCV drops a cut pixel's part when it is 1/1000 of a pixel or less.
  kept = (overlap == m) | (overlap * 1000 > m)
  return jnp.where(kept, _divide(overlap, n), 0.0)


def _fixed_point(image, size: int, area_mode: bool):
  """INTER_LINEAR (and INTER_AREA where an axis grows): each axis reads two
  neighbours with 11-bit weights; rows first, then columns, in int32."""
  rows, row_weights = _taps(image.shape[0], size, area_mode, clamp=False)
  columns, column_weights = _taps(image.shape[1], size, area_mode, clamp=True)
  x = image.astype(jnp.int32)
  # Along the width: [H, size, 3], weights summing to 2^11.
  x = (
    x[:, columns[0]] * column_weights[0][None, :, None]
    + x[:, columns[1]] * column_weights[1][None, :, None]
  )
  # Along the height as OpenCV's vector code does it: each sum 4 bits down
  # to 16, times its weight keeping the high 16 bits, then 2 bits rounded.
  top = (x[rows[0]] >> 4) * row_weights[0][:, None, None] >> 16
  bottom = (x[rows[1]] >> 4) * row_weights[1][:, None, None] >> 16
  x = (top + bottom + 2) >> 2
  return jnp.clip(x, 0, 255).astype(jnp.uint8)


def _taps(n, m: int, area_mode: bool, clamp: bool):
  """Source indices (two [m] arrays) and their integer weights (two [m]
  arrays summing to 2^11) of output 0..m-1 along an axis of length n, as
  OpenCV's computeResizeTabs places them. Outside the photo both taps read
  its edge pixel; along the width (`clamp`) the weights move to the first
  as well, along the height they stay, which the vertical rounding sees."""
  d = jnp.arange(m, dtype=jnp.int32)
  n = _as_int(n)
  if area_mode:
    # In float64 as OpenCV computes it (its floor of d * scale can fall
    # short of an exact integer): sx = floor(d n / m) and
    # fx = (d + 1) - (sx + 1) m / n, kept in [0, 1).
    inverse = m / n.astype(jnp.float64)
    sx = jnp.floor(d * (1.0 / inverse)).astype(jnp.int32)
    fx = ((d + 1) - (sx + 1) * inverse).astype(jnp.float32)
    fx = jnp.where(fx <= 0, 0.0, fx - jnp.floor(fx))
  else:
    # Pixel centres: fx = (d + 0.5) n / m - 0.5 = ((2d + 1) n - m) / 2m.
    numerator = (2 * d + 1) * n - m
    sx = jnp.floor_divide(numerator, 2 * m)
    fx = _divide(numerator, 2 * m) - sx.astype(jnp.float32)
  if clamp:
    fx = jnp.where((sx < 0) | (sx >= n - 1), 0.0, fx)
  first = jnp.round((1.0 - fx) * _COEF_SCALE).astype(jnp.int32)
  taps = (jnp.clip(sx, 0, n - 1), jnp.clip(sx + 1, 0, n - 1))
  return taps, (first, _COEF_SCALE - first)
