"""Independent PyTorch references for the pretrained-checkpoint conversion.

Plain PyTorch (torch==2.13.0, CPU), written from torchvision's ResNet-50 and
timm's VisionTransformer, with their parameter names: the state dicts these
modules save are what users download. timm itself is not used because it
installs torchvision, which replaces the pinned CPU torch with a CUDA build.
`big_vision_npz` writes the ViT's weights under big_vision/AugReg's .npz
names (the inverse of timm's `_load_weights`), to check that route too.
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Bottleneck(nn.Module):
  def __init__(self, in_features: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_features, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(width * 4)
    self.downsample = None
    if stride != 1 or in_features != width * 4:
      self.downsample = nn.Sequential(
        nn.Conv2d(in_features, width * 4, 1, stride, bias=False),
        nn.BatchNorm2d(width * 4),
      )

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return F.relu(y + shortcut)


class ResNet50(nn.Module):
  def __init__(self, num_classes: int, stage_sizes=(3, 4, 6, 3)):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    in_features = 64
    for i, size in enumerate(stage_sizes):
      width = 64 * 2**i
      blocks = []
      for j in range(size):
        blocks.append(Bottleneck(in_features, width, 2 if i and not j else 1))
        in_features = width * 4
      setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
    self.fc = nn.Linear(2048, num_classes)

  def features(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    for i in range(1, 5):
      x = getattr(self, f'layer{i}')(x)
    return x.mean(dim=(2, 3))

  def forward(self, x):
    return self.fc(self.features(x))


class Attention(nn.Module):
  def __init__(self, width: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(width, width * 3)
    self.proj = nn.Linear(width, width)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attention = (q @ k.transpose(-2, -1)) * (c // self.num_heads) ** -0.5
    x = attention.softmax(dim=-1) @ v
    return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
  def __init__(self, width: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(width, hidden)
    self.fc2 = nn.Linear(hidden, width)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
  def __init__(self, width: int, num_heads: int, hidden: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=1e-6)
    self.attn = Attention(width, num_heads)
    self.norm2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = Mlp(width, hidden)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
  def __init__(self, width: int, patch: int):
    super().__init__()
    self.proj = nn.Conv2d(3, width, patch, patch)


class VisionTransformer(nn.Module):
  """timm's ViT with class-token pooling, no pre-logits (AugReg models)."""

  def __init__(self, width, depth, num_heads, hidden, num_classes, size=224):
    super().__init__()
    self.patch_embed = PatchEmbed(width, 16)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
    self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (size // 16) ** 2, width))
    self.blocks = nn.Sequential(
      *[Block(width, num_heads, hidden) for _ in range(depth)]
    )
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, num_classes)

  def features(self, x):
    x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = self.norm(self.blocks(x + self.pos_embed))
    return x[:, 0]

  def forward(self, x):
    return self.head(self.features(x))


def scramble(model: nn.Module, seed: int) -> None:
  """Every tensor random and O(1)-scaled, BN statistics included: a fresh
  initialisation (zero biases, unit variances) would hide mapping mistakes
  such as mean and variance swapped."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if name.endswith('num_batches_tracked'):
        continue
      if name.endswith('running_var'):
        value = torch.rand(tensor.shape, generator=generator) + 0.5
      elif (
        name.endswith(('bn1.weight', 'bn2.weight', 'bn3.weight'))
        or ('downsample.1.weight' in name or 'norm' in name)
        and name.endswith('weight')
      ):
        value = torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5
      else:
        fan_in = max(int(np.prod(tensor.shape[1:])), 1)
        scale = 1.0 / fan_in**0.5 if tensor.ndim > 1 else 0.1
        value = torch.randn(tensor.shape, generator=generator) * scale
      tensor.copy_(value)


def big_vision_npz(model: VisionTransformer) -> dict[str, np.ndarray]:
  """The ViT's weights under big_vision/AugReg's .npz names and layouts."""
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  heads = model.blocks[0].attn.num_heads
  width = sd['cls_token'].shape[-1]
  out = {
    'cls': sd['cls_token'],
    'embedding/kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
    'embedding/bias': sd['patch_embed.proj.bias'],
    'Transformer/posembed_input/pos_embedding': sd['pos_embed'],
    'Transformer/encoder_norm/scale': sd['norm.weight'],
    'Transformer/encoder_norm/bias': sd['norm.bias'],
    'head/kernel': sd['head.weight'].T,
    'head/bias': sd['head.bias'],
  }
  for i in range(len(model.blocks)):
    p, b = f'Transformer/encoderblock_{i}/', f'blocks.{i}.'
    mha = p + 'MultiHeadDotProductAttention_1/'
    q, k, v = np.split(sd[b + 'attn.qkv.weight'], 3)
    qb, kb, vb = np.split(sd[b + 'attn.qkv.bias'], 3)
    for name, w, bias in (('query', q, qb), ('key', k, kb), ('value', v, vb)):
      out[f'{mha}{name}/kernel'] = w.T.reshape(width, heads, -1)
      out[f'{mha}{name}/bias'] = bias.reshape(heads, -1)
    out[f'{mha}out/kernel'] = sd[b + 'attn.proj.weight'].T.reshape(
      heads, -1, width
    )
    out[f'{mha}out/bias'] = sd[b + 'attn.proj.bias']
    for bv, timm in (('LayerNorm_0', 'norm1'), ('LayerNorm_2', 'norm2')):
      out[f'{p}{bv}/scale'] = sd[f'{b}{timm}.weight']
      out[f'{p}{bv}/bias'] = sd[f'{b}{timm}.bias']
    for bv, timm in (('Dense_0', 'fc1'), ('Dense_1', 'fc2')):
      out[f'{p}MlpBlock_3/{bv}/kernel'] = sd[f'{b}mlp.{timm}.weight'].T
      out[f'{p}MlpBlock_3/{bv}/bias'] = sd[f'{b}mlp.{timm}.bias']
  return out


def _tf_same_pad(x, kernel: int, stride: int):
  """TensorFlow's 'SAME': the odd pixel of padding at the bottom/right."""
  pads = []
  for size in reversed(x.shape[-2:]):  # F.pad lists the last axis first.
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads)


class SameConv(nn.Conv2d):
  """efficientnet_pytorch's Conv2dStaticSamePadding, padded per input."""

  def forward(self, x):
    x = _tf_same_pad(x, self.kernel_size[0], self.stride[0])
    return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


class MBConvBlock(nn.Module):
  def __init__(self, in_features, hidden, out_features, kernel, stride):
    super().__init__()
    if hidden != in_features:
      self._expand_conv = SameConv(in_features, hidden, 1, bias=False)
      self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
    self._depthwise_conv = SameConv(
      hidden, hidden, kernel, stride, groups=hidden, bias=False
    )
    self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
    self._project_conv = SameConv(hidden, out_features, 1, bias=False)
    self._bn2 = nn.BatchNorm2d(out_features, eps=1e-3)
    self.residual = stride == 1 and in_features == out_features

  def forward(self, x):
    y = x
    if hasattr(self, '_expand_conv'):
      y = F.relu6(self._bn0(self._expand_conv(y)))
    y = F.relu6(self._bn1(self._depthwise_conv(y)))
    y = self._bn2(self._project_conv(y))
    return x + y if self.residual else y


class EfficientNetLite(nn.Module):
  """efficientnet_pytorch's EfficientNet-Lite, its layer sizes read from a
  state dict of its names; the strides are the one thing a state dict does
  not hold: the first block of each stride-2 stage, per variant."""

  STRIDE_2_BLOCKS = {'lite0': (1, 3, 5, 11), 'lite1': (1, 4, 7, 15),
                     'lite2': (1, 4, 7, 15)}  # fmt: skip

  def __init__(self, state_dict, variant: str):
    super().__init__()
    shape = {k: tuple(v.shape) for k, v in state_dict.items()}
    stem = shape['_conv_stem.weight'][0]
    self._conv_stem = SameConv(3, stem, 3, 2, bias=False)
    self._bn0 = nn.BatchNorm2d(stem, eps=1e-3)
    blocks, i = [], 0
    while f'_blocks.{i}._depthwise_conv.weight' in shape:
      depthwise = shape[f'_blocks.{i}._depthwise_conv.weight']
      out_features, hidden = shape[f'_blocks.{i}._project_conv.weight'][:2]
      expand = shape.get(f'_blocks.{i}._expand_conv.weight')
      in_features = expand[1] if expand else hidden
      stride = 2 if i in self.STRIDE_2_BLOCKS[variant] else 1
      blocks.append(MBConvBlock(in_features, hidden, out_features,
                                depthwise[-1], stride))  # fmt: skip
      i += 1
    self._blocks = nn.ModuleList(blocks)
    head, head_in = shape['_conv_head.weight'][:2]
    self._conv_head = SameConv(head_in, head, 1, bias=False)
    self._bn1 = nn.BatchNorm2d(head, eps=1e-3)
    self._fc = nn.Linear(*reversed(shape['_fc.weight']))
    self.load_state_dict(state_dict)

  def features(self, x):
    x = F.relu6(self._bn0(self._conv_stem(x)))
    for block in self._blocks:
      x = block(x)
    return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

  def forward(self, x):
    return self._fc(self.features(x))
