"""Convolutions on the CPU through oneDNN: bfloat16 (AMX, AVX512-BF16) or
float32 (any x86-64 CPU).

XLA:CPU's convolutions run in float32 on Eigen; on a CPU with AMX, oneDNN's
bfloat16 kernels run the CPU configs' layers several times faster, and
without bf16 hardware oneDNN's float32 kernels still beat Eigen's
(docs/performance.md). `conv_general_dilated` is a drop-in for
`lax.conv_general_dilated` that models pass to flax's `nn.Conv`: on the
CPU it casts the image and kernel to bfloat16 and calls oneDNN through
three XLA FFI custom calls (forward, input gradient, kernel gradient;
float32 results, as a TPU's default precision does); `in_float32` is the
same in float32; on any other platform both are XLA's own conv, so GPU and
TPU lowering are unchanged.

The C++ (conv.cc) is compiled on first use with the system's g++ against
oneDNN's headers and library: the PyPI wheels this package depends on (on
x86-64 Linux), a newer system oneDNN (`apt install libdnnl-dev`), or the
one under CATDOG_JAX_ONEDNN_ROOT=PREFIX; cached under the user cache folder
by the hash of its source and the versions it was built against.
"""

import ctypes
import fcntl
import functools
import hashlib
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from catdog_jax import fileio
from catdog_jax.errors import UsageError

SOURCE = os.path.join(os.path.dirname(__file__), 'conv.cc')
ROOT_ENV = 'CATDOG_JAX_ONEDNN_ROOT'  # A prefix with include/ and lib/.
_TARGETS = {
  'forward': 'catdog_conv_forward',
  'backward_data': 'catdog_conv_backward_data',
  'backward_weights': 'catdog_conv_backward_weights',
  'forward_fused': 'catdog_conv_forward_fused',
}
_SYMBOLS = {
  'forward': 'CatdogConvForward',
  'backward_data': 'CatdogConvBackwardData',
  'backward_weights': 'CatdogConvBackwardWeights',
  'forward_fused': 'CatdogConvForwardFused',
}
# Kernels that run bfloat16 in hardware: anything else (emulation, oneDNN's
# reference code) is slower than XLA's float32.
_HARDWARE_BF16 = ('amx_bf16', 'avx512_core_bf16')
IMPLEMENTATIONS = ('xla', 'onednn_bf16', 'onednn_f32', 'auto')


class Unavailable(Exception):
  """oneDNN's bf16 convolutions cannot run here; the message says why."""


# Where oneDNN may be: this environment's prefix (the onednn-cpu-gomp and
# onednn-devel-cpu-gomp wheels, a dependency on x86-64 Linux, put lib/ and
# include/ there), then the system's (apt install libdnnl-dev).
_SYSTEM_PREFIXES = ('/usr', '/usr/local')
_LIBRARY_DIRS = ('lib', 'lib64', 'lib/x86_64-linux-gnu')


def installed(prefix: str) -> tuple[str, str, tuple[int, ...]] | None:
  """(include folder, library file, version) of a oneDNN under `prefix`,
  None if it has no headers and library."""
  include = os.path.join(prefix, 'include')
  version_header = os.path.join(include, 'oneapi/dnnl/dnnl_version.h')
  headers = (os.path.join(include, 'oneapi/dnnl/dnnl.hpp'), version_header)
  if not all(map(os.path.isfile, headers)):
    return None
  for libdir in _LIBRARY_DIRS:
    library = os.path.join(prefix, libdir, 'libdnnl.so')
    if os.path.isfile(library):
      return include, library, _version(version_header)
  return None


def _version(header: str) -> tuple[int, ...]:
  with open(header) as f:
    text = f.read()
  return tuple(
    int(re.search(rf'#define DNNL_VERSION_{part}\s+(\d+)', text).group(1))
    for part in ('MAJOR', 'MINOR', 'PATCH')
  )


def find_onednn(
  environ=os.environ, prefixes=(sys.prefix, *_SYSTEM_PREFIXES)
) -> tuple[str, str]:
  """(include folder, library file) of the oneDNN to build against: the one
  under $CATDOG_JAX_ONEDNN_ROOT when set, else the newest installed (the
  environment's wheels or the system's).

  Raises:
    Unavailable: naming what to install.
  """
  if environ.get(ROOT_ENV):
    found = installed(environ[ROOT_ENV])
    if found is None:
      raise Unavailable(
        f'{ROOT_ENV}={environ[ROOT_ENV]} has no include/oneapi/dnnl/dnnl.hpp '
        'and lib/libdnnl.so'
      )
    return found[:2]
  found = [f for f in map(installed, prefixes) if f is not None]
  if not found:
    raise Unavailable(
      'oneDNN is not installed (pip install onednn-cpu-gomp '
      f'onednn-devel-cpu-gomp, apt install libdnnl-dev, or set {ROOT_ENV}'
      '=PREFIX with include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so)'
    )
  include, library, _ = max(found, key=lambda f: f[2])
  return include, library


def _build_id(include: str) -> str:
  """A hash of what the built library depends on."""
  digest = hashlib.sha256()
  with open(SOURCE, 'rb') as f:
    digest.update(f.read())
  with open(os.path.join(include, 'oneapi/dnnl/dnnl_version.h'), 'rb') as f:
    digest.update(f.read())
  digest.update(jax.lib.__version__.encode())
  return digest.hexdigest()[:16]


def build() -> str:
  """The compiled library, built now if this source was never built here.

  Raises:
    Unavailable: without oneDNN or g++, or when compiling fails.
  """
  include, library = find_onednn()
  folder = os.path.join(fileio.user_cache_dir(), 'onednn', _build_id(include))
  built = os.path.join(folder, 'libcatdog_onednn.so')
  if os.path.exists(built):
    return built
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'build.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Another process may be building it.
    if not os.path.exists(built):
      _compile(include, library, built)
  return built


def _compile(include: str, library: str, output: str) -> None:
  logging.info('Compiling the oneDNN convolutions (once; ~20 s).')
  temporary = f'{output}.{os.getpid()}.tmp'
  command = [
    'g++', '-O2', '-std=c++17', '-shared', '-fPIC', SOURCE,
    f'-I{jax.ffi.include_dir()}', f'-I{include}',
    f'-L{os.path.dirname(library)}', f'-Wl,-rpath,{os.path.dirname(library)}',
    '-ldnnl', '-o', temporary,
  ]  # fmt: skip
  try:
    subprocess.run(command, check=True, capture_output=True, text=True)
  except FileNotFoundError as e:
    raise Unavailable('g++ is not installed') from e
  except subprocess.CalledProcessError as e:
    last = (e.stderr.strip().splitlines() or ['?'])[-1]
    raise Unavailable(f'compiling {SOURCE} failed: {last}') from e
  os.replace(temporary, output)


@functools.cache
def _library() -> ctypes.CDLL:
  """Builds, loads and registers the custom calls.

  Raises:
    Unavailable: when it cannot build.
  """
  # oneDNN's OpenMP threads share the cores with XLA's: GNU OpenMP's
  # default, spinning after each call, starved XLA's and made Lite0's small
  # convolutions 2-8x slower (docs/performance.md). Read when libgomp
  # loads, so too late where something loaded it already.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  library = ctypes.CDLL(build())
  library.CatdogConvKernelName.restype = ctypes.c_char_p
  library.CatdogConvKernelName.argtypes = [ctypes.c_int]
  for op, target in _TARGETS.items():
    jax.ffi.register_ffi_target(
      target, jax.ffi.pycapsule(getattr(library, _SYMBOLS[op])), 'cpu'
    )
  return library


@functools.cache
def load() -> str:
  """Builds, loads and registers the custom calls; returns oneDNN's bf16
  kernel name for this CPU (e.g. 'brgconv:avx512_core_amx_bf16').

  Raises:
    Unavailable: when it cannot build, or this CPU has no bf16 kernels.
  """
  kernel = _library().CatdogConvKernelName(0).decode()
  if not any(name in kernel for name in _HARDWARE_BF16):
    raise Unavailable(
      f'this CPU has no bfloat16 convolution kernels (oneDNN picks '
      f'{kernel or "none"}): it needs AMX or AVX512-BF16'
    )
  return kernel


@functools.cache
def load_f32() -> str:
  """As `load`, for float32 convolutions, which every x86-64 CPU runs;
  returns oneDNN's kernel name (e.g. 'brgconv:avx2').

  Raises:
    Unavailable: when it cannot build, or oneDNN has only its reference
      (unvectorised) code here.
  """
  kernel = _library().CatdogConvKernelName(1).decode()
  if not kernel or kernel.startswith('ref'):
    raise Unavailable(
      f'oneDNN has no vectorised float32 convolution here (it picks '
      f'{kernel or "none"})'
    )
  return kernel


def check_implementation(name: str) -> None:
  """Raises UsageError unless convolutions `name` can run here."""
  if name not in IMPLEMENTATIONS:
    raise UsageError(
      f'unknown cpu_convolutions {name!r}; known: {", ".join(IMPLEMENTATIONS)}'
    )
  if name.startswith('onednn') and jax.default_backend() == 'cpu':
    _load(name)


def _load(name: str) -> str:
  """`load` or `load_f32` for implementation `name`; its kernel's name.

  Raises:
    UsageError: where it cannot run here.
  """
  try:
    return load() if name == 'onednn_bf16' else load_f32()
  except Unavailable as e:
    raise UsageError(
      f'cpu_convolutions={name}: {e}; use auto or xla instead'
    ) from e


def cpu_flags(cpuinfo: str = '/proc/cpuinfo') -> frozenset[str]:
  """The CPU's feature flags as Linux lists them (empty elsewhere)."""
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def fallback_cost(flags: frozenset[str]) -> str:
  """What XLA's float32 convolutions cost, against oneDNN's, on a CPU with
  these feature flags (measured: docs/performance.md)."""
  if flags & {'amx_bf16', 'avx512_bf16'}:
    return (
      "on this CPU that makes the CPU configs' ResNet train 1.5-1.8x "
      'and evaluate 1.8-2.2x slower'
    )
  return (
    "against oneDNN's float32 that makes EfficientNet-Lite's train step "
    "about 3x and the ResNet's 1.1-1.4x slower (measured in AVX2)"
  )


@functools.cache
def conv_for(name: str):
  """The `conv_general_dilated` the models get for config.cpu_convolutions:
  None (XLA's own) or one of this module's. 'auto' chooses oneDNN in
  bfloat16 where the CPU has bf16 hardware, else oneDNN in float32, else
  XLA's, and says which once."""
  if name == 'xla' or jax.default_backend() != 'cpu':
    return None
  if name != 'auto':
    return _announced(name, _load(name))
  try:
    return _announced('onednn_bf16', load())
  except Unavailable as no_bf16:
    try:
      return _announced('onednn_f32', load_f32(), f'; no bf16: {no_bf16}')
    except Unavailable as e:
      logging.info('Convolutions: XLA float32 (oneDNN not used: %s; %s).',
                   e, fallback_cost(cpu_flags()))  # fmt: skip
      return None


def _announced(name: str, kernel: str, why: str = ''):
  """Implementation `name`'s conv, after one log line saying which."""
  words, conv = {
    'onednn_bf16': ('bfloat16', conv_general_dilated),
    'onednn_f32': ('float32', in_float32),
  }[name]
  logging.info('Convolutions: oneDNN %s (%s%s).', words, kernel, why)
  return conv


# --- The differentiable convolution --------------------------------------


def _attributes(strides, padding, groups) -> dict:
  return {
    'strides': np.asarray(strides, np.int64),
    'padding': np.asarray([p for pair in padding for p in pair], np.int64),
    'groups': np.int64(groups),
  }


def _call(op: str, shape, a, b, geometry, compute):
  """oneDNN's `op` on `a` and `b` in `compute` (bfloat16 or float32), its
  float32 result of `shape`."""
  call = jax.ffi.ffi_call(
    _TARGETS[op], jax.ShapeDtypeStruct(shape, jnp.float32)
  )
  return call(a.astype(compute), b.astype(compute), **_attributes(*geometry))


def _geometry(x_shape, kernel_shape, strides, padding, groups):
  """(strides, ((lo, hi), (lo, hi)) padding, feature groups) as hashable
  ints, `padding` as `lax.conv_general_dilated` takes it."""
  strides = tuple(int(s) for s in strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x_shape[1:3], kernel_shape[:2], strides,
                                  padding)  # fmt: skip
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  return strides, padding, int(groups)


def _output_shape(x_shape, kernel_shape, geometry):
  strides, padding, _ = geometry
  n, h, w, _ = x_shape
  kh, kw, _, f = kernel_shape
  oh = (h + sum(padding[0]) - kh) // strides[0] + 1
  ow = (w + sum(padding[1]) - kw) // strides[1] + 1
  return n, oh, ow, f


# geometry: `_geometry`; compute: the dtype oneDNN computes in.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, geometry, compute):
  return _forward(x, kernel, geometry, compute)[0]


def _forward(x, kernel, geometry, compute):
  shape = _output_shape(x.shape, kernel.shape, geometry)
  y = _call('forward', shape, x, kernel, geometry, compute)
  residuals = (x.astype(compute), kernel.astype(compute))
  return y.astype(x.dtype), residuals


def _backward(geometry, compute, residuals, dy):
  # flax promotes the image and kernel to one dtype, the output's.
  x, kernel = residuals
  strides, padding, groups = geometry
  dtype = dy.dtype
  if groups > 1 and strides != (1, 1):
    # oneDNN runs a strided grouped conv's gradients with a generic kernel,
    # slower than XLA's taps for depthwise ones; the gradient of a strided
    # conv is the stride-1 conv's at the output gradient spread over the
    # stride-1 grid with zeros between, which its depthwise kernels take.
    dy = _spread(dy.astype(compute), x.shape, kernel.shape, strides, padding)
    geometry = ((1, 1), padding, groups)
  dx = _call('backward_data', x.shape, dy, kernel, geometry, compute)
  dkernel = _kernel_gradient(x, dy, kernel.shape, geometry, compute)
  return dx.astype(dtype), dkernel.astype(dtype)


def _kernel_gradient(x, dy, kernel_shape, geometry, compute):
  """The kernel's gradient of a conv at output gradient `dy`.

  oneDNN's depthwise kernel gradient (jit_dw) takes 3x3 kernels only; a
  5x5's falls to a generic grouped kernel 5-20x slower (docs/performance.md),
  so at stride 1 a larger depthwise kernel's gradient is put together from
  3x3 windows of it, each oneDNN's depthwise gradient.
  """
  strides, padding, groups = geometry
  kh, kw, per_group, features = kernel_shape
  depthwise = groups > 1 and per_group == 1 and features == groups
  larger_than_3x3 = min(kh, kw) >= 3 and max(kh, kw) > 3
  if not (depthwise and larger_than_3x3 and strides == (1, 1)):
    return _call('backward_weights', kernel_shape, x, dy, geometry, compute)
  # jit_dw takes these 3x3 windows unpadded (the input padded here).
  _, out_h, out_w, _ = dy.shape
  x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  rows = []
  for row, row_taps in _windows(kh):
    pieces = []
    for col, col_taps in _windows(kw):
      window = x[:, row : row + out_h + 2, col : col + out_w + 2]
      piece = _call(
        'backward_weights', (3, 3, 1, features), window, dy,
        ((1, 1), ((0, 0), (0, 0)), groups), compute,
      )  # fmt: skip
      pieces.append(piece[row_taps][:, col_taps])
    rows.append(jnp.concatenate(pieces, axis=1))
  return jnp.concatenate(rows, axis=0)


def _windows(k: int) -> list[tuple[int, slice]]:
  """The 3-tap windows of a k-tap kernel axis: (first tap, which of the
  window's taps are new), at 0, 3, ..., the last at k - 3 (overlapping the
  one before)."""
  windows, covered = [], 0
  for start in sorted({*range(0, k - 2, 3), k - 3}):
    windows.append((start, slice(covered - start, 3)))
    covered = start + 3
  return windows


def _spread(dy, x_shape, kernel_shape, strides, padding):
  """dy at every `strides`-th position of the stride-1 conv's output, zeros
  between."""
  pads = [(0, 0, 0)]
  for i in (0, 1):
    full = x_shape[1 + i] + sum(padding[i]) - kernel_shape[i] + 1
    spread = (dy.shape[1 + i] - 1) * strides[i] + 1
    pads.append((0, full - spread, strides[i] - 1))
  return lax.pad(dy, jnp.zeros((), dy.dtype), [*pads, (0, 0, 0)])


_conv.defvjp(_forward, _backward)


# --- The conv with a bias and ReLU6 as it writes (a BatchNorm folded in) ---


# fusion: (geometry, relu6, the output's dtype, the dtype oneDNN computes in).
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _fused_conv(x, kernel, bias, fusion):
  return _fused_forward(x, kernel, bias, fusion)[0]


def _fused_forward(x, kernel, bias, fusion):
  geometry, relu6, dtype, compute = fusion
  shape = _output_shape(x.shape, kernel.shape, geometry)
  call = jax.ffi.ffi_call(
    _TARGETS['forward_fused'], jax.ShapeDtypeStruct(shape, dtype)
  )
  x, kernel = x.astype(compute), kernel.astype(compute)
  y = call(x, kernel, bias.astype(jnp.float32), relu6=relu6,
           **_attributes(*geometry))  # fmt: skip
  return y, (x, kernel, y)


def _fused_backward(fusion, residuals, dy):
  geometry, relu6, _, compute = fusion
  x, kernel, y = residuals
  if relu6:  # Where ReLU6 passed its input through.
    dy = jnp.where((y > 0) & (y < 6), dy, jnp.zeros((), dy.dtype))
  dbias = jnp.sum(dy, axis=(0, 1, 2), dtype=jnp.float32)
  # `_backward` returns the gradients in dy's dtype: the kernel's float32.
  dx, dkernel = _backward(
    geometry, compute, (x, kernel), dy.astype(jnp.float32)
  )
  return dx.astype(compute), dkernel, dbias


_fused_conv.defvjp(_fused_forward, _fused_backward)


def conv_bias_relu6(x, kernel, bias, strides, padding, feature_group_count=1,
                    relu6=True, dtype=jnp.bfloat16,
                    compute_dtype=jnp.bfloat16):  # fmt: skip
  """relu6(conv(x, kernel) + bias) (or without relu6) in one oneDNN call
  on the CPU, computed in `compute_dtype` (bfloat16 or float32), its output
  in `dtype` (float32, or bfloat16 when computing in it): a conv with the
  BatchNorm after it folded into its kernel and bias. NHWC and HWIO;
  `padding` as `lax.conv_general_dilated` takes it. Elsewhere, XLA's conv
  and the same arithmetic.
  """
  geometry = _geometry(
    x.shape, kernel.shape, strides, padding, feature_group_count
  )
  strides, padding, _ = geometry
  compute = jnp.dtype(compute_dtype)
  fusion = (geometry, bool(relu6), jnp.dtype(dtype), compute)

  def xla(x, kernel, bias):
    common = jnp.promote_types(x.dtype, kernel.dtype)
    y = lax.conv_general_dilated(
      x.astype(common), kernel.astype(common), strides, padding,
      dimension_numbers=_NHWC,
      feature_group_count=feature_group_count,
    ) + bias  # fmt: skip
    return (jnp.clip(y, 0, 6) if relu6 else y).astype(dtype)

  def onednn(x, kernel, bias):
    # The VJP's primals in the dtypes of the cotangents it returns.
    return _fused_conv(
      x.astype(compute),
      kernel.astype(jnp.float32),
      bias.astype(jnp.float32),
      fusion,
    )

  return lax.platform_dependent(x, kernel, bias, cpu=onednn, default=xla)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _nhwc_hwio(dimension_numbers, ndim: int) -> bool:
  numbers = lax.conv_dimension_numbers(
    (1,) * ndim, (1,) * ndim, dimension_numbers
  )
  return numbers == lax.conv_dimension_numbers(
    (1,) * ndim, (1,) * ndim, ('NHWC', 'HWIO', 'NHWC')
  )


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  preferred_element_type=None,
  compute_dtype=jnp.bfloat16,
):
  """`lax.conv_general_dilated`, in bfloat16 (or `compute_dtype` float32)
  through oneDNN on the CPU.

  What oneDNN here does not cover (dilations, other layouts) is XLA's
  conv, as on other platforms.
  """
  xla = functools.partial(
    lax.conv_general_dilated,
    window_strides=window_strides,
    padding=padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  plain = (
    lhs.ndim == 4
    and all(d == 1 for d in (lhs_dilation or (1, 1)))
    and all(d == 1 for d in (rhs_dilation or (1, 1)))
    and _nhwc_hwio(dimension_numbers, lhs.ndim)
  )
  if not plain:
    return xla(lhs, rhs)
  geometry = _geometry(
    lhs.shape, rhs.shape, window_strides, padding, feature_group_count
  )
  return lax.platform_dependent(
    lhs,
    rhs,
    cpu=lambda x, k: _conv(x, k, geometry, jnp.dtype(compute_dtype)),
    default=lambda x, k: xla(x, k),
  )


# What a model may use beside the drop-in: the conv with a folded BatchNorm
# and ReLU6 (EfficientNet-Lite does where its BatchNorm is frozen), and the
# dtype that one writes its activations in.
conv_general_dilated.fused = conv_bias_relu6
conv_general_dilated.activations = jnp.dtype(jnp.bfloat16)

# The same in float32: oneDNN's float32 kernels, for CPUs without bfloat16
# hardware.
in_float32 = functools.partial(conv_general_dilated, compute_dtype=jnp.float32)
in_float32.fused = functools.partial(conv_bias_relu6, compute_dtype=jnp.float32)
in_float32.activations = jnp.dtype(jnp.float32)
