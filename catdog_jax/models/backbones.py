"""Backbones that load pretrained ImageNet weights: ResNet-50 and ViT.

`ResNet50` has torchvision/timm's structure (explicit PyTorch paddings, v1.5
bottleneck with the stride on the 3x3) and their layer names, so converted
weights give the same outputs. `ViT` has big_vision/AugReg's structure and
parameter names (class token, learned position embeddings, exact GELU,
LayerNorm eps 1e-6). Both normalise their [0, 1] input as their checkpoint
family was trained (`normalize`), end in one dog logit named `logit`, and
return the pooled features instead with `features_only=True` (the linear
probe's input). `pretrained.py` converts and loads the checkpoints.
"""

import flax.linen as nn
import jax.numpy as jnp

from catdog_jax.models import layers

# Per-channel (mean, std) of the [0, 1] pixels each checkpoint family saw.
NORMALIZATIONS = {
  'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision
  'inception': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # AugReg: [-1, 1]
  # TensorFlow's EfficientNet-Lite: (x - 127) / 128 on 0-255.
  'efficientnet_lite': ((127 / 255,) * 3, (128 / 255,) * 3),
}


def normalize(images, name: str):
  mean, std = NORMALIZATIONS[name]
  return (images - jnp.asarray(mean)) / jnp.asarray(std)


def _pad(size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((size, size), (size, size))  # PyTorch's symmetric padding.


class Bottleneck(nn.Module):
  """torchvision's v1.5 bottleneck: 1x1, 3x3 (strided), 1x1 x4, shortcut."""

  width: int
  strides: int
  frozen: str = ''
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    def conv(features, kernel, strides, name):
      return nn.Conv(
        features, (kernel, kernel), (strides, strides), _pad(kernel // 2),
        use_bias=False, dtype=self.dtype, name=name,
      )  # fmt: skip

    def norm(name):
      return layers.FreezableBatchNorm(
        frozen=self.frozen, dtype=self.dtype, name=name
      )

    y = nn.relu(norm('bn1')(conv(self.width, 1, 1, 'conv1')(x), train))
    y = conv(self.width, 3, self.strides, 'conv2')(y)
    y = nn.relu(norm('bn2')(y, train))
    y = norm('bn3')(conv(self.width * 4, 1, 1, 'conv3')(y), train)
    if x.shape != y.shape:
      x = conv(self.width * 4, 1, self.strides, 'downsample_conv')(x)
      x = norm('downsample_bn')(x, train)
    return nn.relu(x + y)


class ResNet50(nn.Module):
  """ResNet-50 as torchvision and timm build it, with one dog logit.

  Attributes:
    stage_sizes: bottlenecks per stage ((3, 4, 6, 3): ResNet-50).
    normalize: the input normalisation of the checkpoint family.
    frozen: see `layers.FreezableBatchNorm`.
    dtype: computation dtype; parameters stay float32.
  """

  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
  normalize: str = 'imagenet'
  frozen: str = ''
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False, features_only=False):
    x = normalize(images, self.normalize).astype(self.dtype)
    x = nn.Conv(
      64, (7, 7), (2, 2), _pad(3), use_bias=False, dtype=self.dtype,
      name='conv1',
    )(x)  # fmt: skip
    x = layers.FreezableBatchNorm(
      frozen=self.frozen, dtype=self.dtype, name='bn1'
    )(x, train)
    x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), _pad(1))
    for i, size in enumerate(self.stage_sizes):
      for j in range(size):
        x = Bottleneck(
          64 * 2**i,
          2 if i > 0 and j == 0 else 1,
          self.frozen,
          self.dtype,
          name=f'layer{i + 1}_{j}',
        )(x, train)
    x = layers.GlobalAvgPool(name='pool')(x)
    if features_only:
      return x.astype(jnp.float32)
    return nn.Dense(1, dtype=self.dtype, name='logit')(x)[:, 0].astype(
      jnp.float32
    )


class EncoderBlock(nn.Module):
  """Pre-LN transformer block, with big_vision/AugReg's layer names."""

  mlp_dim: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    def layer_norm(name):
      return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)

    y = layer_norm('LayerNorm_0')(x)
    y = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      dtype=self.dtype,
      deterministic=True,
      name='MultiHeadDotProductAttention_1',
    )(y, y)
    x = x + y
    y = layer_norm('LayerNorm_2')(x)
    y = MlpBlock(self.mlp_dim, self.dtype, name='MlpBlock_3')(y)
    return x + y


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name='Dense_0')(x)
    y = nn.gelu(y, approximate=False)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name='Dense_1')(y)


class Encoder(nn.Module):
  """Position embeddings, the blocks and the final LayerNorm."""

  depth: int
  mlp_dim: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    position = PositionEmbedding(name='posembed_input')
    x = x + position(x.shape[1:]).astype(x.dtype)
    for i in range(self.depth):
      x = EncoderBlock(
        self.mlp_dim, self.num_heads, self.dtype, name=f'encoderblock_{i}'
      )(x)
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name='encoder_norm')(x)


class PositionEmbedding(nn.Module):
  @nn.compact
  def __call__(self, shape):
    init = nn.initializers.normal(stddev=0.02)
    return self.param('pos_embedding', init, (1, *shape))


class ViT(nn.Module):
  """Vision Transformer (big_vision/AugReg), the class token's features.

  The defaults are ViT-S/16; ViT-B/16 is width 768, mlp_dim 3072, 12 heads.

  Attributes:
    patch_size: side of the square patches.
    width: token width.
    depth: encoder blocks.
    mlp_dim: hidden width of each block's MLP.
    num_heads: attention heads.
    normalize: the input normalisation of the checkpoint family.
    frozen: unused (no BatchNorm); here so optimizer.freeze works alike.
    dtype: computation dtype; parameters stay float32.
  """

  patch_size: int = 16
  width: int = 384
  depth: int = 12
  mlp_dim: int = 1536
  num_heads: int = 6
  normalize: str = 'inception'
  frozen: str = ''
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False, features_only=False):
    del train  # No dropout, no BatchNorm.
    x = normalize(images, self.normalize).astype(self.dtype)
    p = self.patch_size
    x = nn.Conv(
      self.width, (p, p), (p, p), 'VALID', dtype=self.dtype, name='embedding'
    )(x)
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height * width, channels)
    cls = self.param('cls', nn.initializers.zeros, (1, 1, channels))
    x = jnp.concatenate([jnp.tile(cls, (batch, 1, 1)).astype(x.dtype), x], 1)
    x = Encoder(
      self.depth, self.mlp_dim, self.num_heads, self.dtype, name='Transformer'
    )(x)
    x = x[:, 0]
    if features_only:
      return x.astype(jnp.float32)
    return nn.Dense(1, dtype=self.dtype, name='logit')(x)[:, 0].astype(
      jnp.float32
    )
