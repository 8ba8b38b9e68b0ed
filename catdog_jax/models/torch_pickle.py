"""PyTorch `.pth` state dicts read into NumPy, without PyTorch.

Both of `torch.save`'s formats: the legacy stream (before PyTorch 1.6: a
magic number, the protocol version, system info, the pickled state dict,
the storage keys, then each storage's bytes) and the zip archive (its
`data.pkl` and one `data/KEY` entry per storage). The pickles are read by an
unpickler that admits only the globals a state dict needs (an OrderedDict,
the tensor and parameter rebuilders, the storage types) and refuses any
other with one line, so a file cannot run code on load.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from catdog_jax.errors import UsageError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
  'FloatStorage': np.float32,
  'DoubleStorage': np.float64,
  'HalfStorage': np.float16,
  'LongStorage': np.int64,
  'IntStorage': np.int32,
  'ShortStorage': np.int16,
  'CharStorage': np.int8,
  'ByteStorage': np.uint8,
  'BoolStorage': np.bool_,
}


class _StorageType:
  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
  """A tensor's place in a storage, filled once the storage is read."""

  def __init__(self, key, dtype, offset, shape, strides):
    self.key, self.dtype = key, dtype
    self.offset, self.shape, self.strides = offset, shape, strides

  def materialize(self, storages: dict[str, np.ndarray]) -> np.ndarray:
    data = storages[self.key]
    itemsize = self.dtype.itemsize
    if self.shape and self.offset + _extent(self.shape, self.strides) > len(
      data
    ):
      raise UsageError(f'tensor outside its storage {self.key!r}: damaged')
    return np.lib.stride_tricks.as_strided(
      data[self.offset :],
      shape=self.shape,
      strides=tuple(s * itemsize for s in self.strides),
    ).copy()


def _extent(shape, strides) -> int:
  return 1 + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))


def _rebuild_tensor_v2(storage, offset, shape, strides, *unused):
  del unused  # requires_grad, backward hooks, metadata: not for inference.
  key, dtype = storage
  return _TensorRef(key, dtype, offset, tuple(shape), tuple(strides))


def _rebuild_parameter(tensor, *unused):
  del unused
  return tensor


_ALLOWED = {
  ('collections', 'OrderedDict'): collections.OrderedDict,
  ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
  ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  **{('torch', name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
  """Admits only a state dict's globals; records each storage it meets."""

  def __init__(self, file, source: str):
    super().__init__(file)
    self.source = source
    self.storage_sizes: dict[str, tuple[np.dtype, int]] = {}

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise UsageError(
        f'{self.source}: refusing to load {module}.{name}: a PyTorch state '
        'dict holds tensors only (the file may run code; not loaded)'
      )
    return _ALLOWED[(module, name)]

  def persistent_load(self, pid):
    # ('storage', storage type, key, location, number of elements, ...).
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise UsageError(f'{self.source}: unknown persistent id {pid!r}')
    storage_type, key, size = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, _StorageType):
      raise UsageError(f'{self.source}: unknown storage {storage_type!r}')
    self.storage_sizes[key] = (storage_type.dtype, size)
    return key, storage_type.dtype


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The `.pth` file's tensors by name, as NumPy arrays.

  Raises:
    UsageError: on a file that is not a PyTorch state dict, is damaged, or
      holds anything but tensors.
  """
  try:
    if zipfile.is_zipfile(path):
      return _read_zip(path)
    with open(path, 'rb') as f:
      return _read_legacy(f, path)
  except UsageError:
    raise
  except (pickle.UnpicklingError, EOFError, struct.error, ValueError) as e:
    raise UsageError(
      f'{path} is not a readable PyTorch state dict ({type(e).__name__}: {e})'
    ) from e


def _read_legacy(f, path: str) -> dict[str, np.ndarray]:
  header = _Unpickler(f, path)
  if header.load() != _LEGACY_MAGIC:
    raise UsageError(f'{path} is not a PyTorch file (no magic number)')
  if header.load() != _LEGACY_PROTOCOL:
    raise UsageError(f'{path}: unknown PyTorch protocol version')
  system = header.load()
  if not system.get('little_endian', False):
    raise UsageError(f'{path}: big-endian PyTorch files are not read')
  unpickler = _Unpickler(f, path)
  state = unpickler.load()
  keys = _Unpickler(f, path).load()
  storages = {}
  for key in keys:
    dtype, size = unpickler.storage_sizes[key]
    (count,) = struct.unpack('<q', f.read(8))
    if count != size:
      raise UsageError(f'{path}: storage {key!r} holds {count}, not {size}')
    raw = f.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
      raise UsageError(f'{path} is truncated (storage {key!r})')
    storages[key] = np.frombuffer(raw, dtype)
  return _materialize(state, storages, path)


def _read_zip(path: str) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise UsageError(f'{path}: a zip, but not a PyTorch file (no data.pkl)')
    prefix = pickles[0].removesuffix('data.pkl')
    unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])), path)
    state = unpickler.load()
    storages = {}
    for key, (dtype, size) in unpickler.storage_sizes.items():
      raw = archive.read(f'{prefix}data/{key}')
      storages[key] = np.frombuffer(raw, dtype, count=size)
  return _materialize(state, storages, path)


def _materialize(state, storages, path: str) -> dict[str, np.ndarray]:
  if not isinstance(state, dict):
    raise UsageError(f'{path} holds a {type(state).__name__}, not a state dict')
  tensors = {}
  for name, value in state.items():
    if not isinstance(value, _TensorRef):
      raise UsageError(f'{path}: {name!r} is not a tensor')
    tensors[name] = value.materialize(storages)
  return tensors
