"""oneDNN's bfloat16 and float32 convolutions (catdog_jax/onednn) against
XLA's.

They run where oneDNN is installed and, for bfloat16, the CPU has bf16
kernels (AMX or AVX512-BF16); elsewhere they skip, saying what is missing.
"""

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from catdog_jax import onednn
from catdog_jax import settings
from catdog_jax import state as state_lib
from catdog_jax.errors import UsageError
from tests import helpers


def skip_reason(load=onednn.load) -> str | None:
  try:
    load()
  except onednn.Unavailable as e:
    return str(e)
  return None


needs_onednn = pytest.mark.skipif(
  skip_reason() is not None, reason=f'oneDNN bf16: {skip_reason()}'
)
needs_onednn_f32 = pytest.mark.skipif(
  skip_reason(onednn.load_f32) is not None,
  reason=f'oneDNN float32: {skip_reason(onednn.load_f32)}',
)
NHWC = ('NHWC', 'HWIO', 'NHWC')
# Float32 accumulation of the same bf16 products, in another order.
RTOL = 1e-5


def bf16(x):
  """x rounded to bfloat16, kept float32: what oneDNN computes with."""
  return x.astype(jnp.bfloat16).astype(jnp.float32)


# compute -> (the drop-in, what its inputs are rounded to), and the mark.
COMPUTES = {
  'bf16': ((onednn.conv_general_dilated, bf16), needs_onednn),
  'f32': ((onednn.in_float32, lambda x: x), needs_onednn_f32),
}


def cases(compute: str, geometries) -> list:
  return [
    pytest.param(compute, *g, marks=COMPUTES[compute][1]) for g in geometries
  ]


def random_pair(rng, n, h, w, c, k, f):
  x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((k, k, c, f)) * 0.2, jnp.float32)
  return x, kernel


def assert_close(got, want):
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(got, want, atol=RTOL * scale, rtol=0)


GEOMETRIES = [
  ((4, 16, 16, 8), 3, (1, 1), 'SAME', 1),
  ((4, 17, 15, 8), 3, (2, 2), 'SAME', 1),  # Odd sizes: uneven SAME pads.
  ((2, 32, 32, 3), 3, (2, 2), 'SAME', 1),  # The 3-channel stem.
  ((4, 8, 8, 16), 1, (2, 2), 'VALID', 1),  # A strided 1x1 shortcut.
  ((2, 12, 12, 8), 3, (1, 2), ((2, 0), (1, 1)), 1),
  ((4, 15, 15, 16), 5, (1, 1), 'SAME', 16),  # Depthwise, as in Lite.
  ((2, 9, 9, 16), 3, (2, 2), 'SAME', 16),
  ((2, 10, 11, 16), 5, (2, 2), 'SAME', 16),
  ((2, 9, 9, 8), 7, (1, 1), ((3, 2), (1, 4)), 8),  # Windows overlap.
  ((2, 10, 10, 8), 3, (1, 1), 'SAME', 2),  # Groups of 4 channels.
  ((2, 10, 11, 8), 5, (2, 2), 'SAME', 2),
]


@pytest.mark.parametrize(
  'compute, shape, k, strides, padding, groups',
  # Float32 shares every path but the dtype: its distinct ones.
  cases('bf16', GEOMETRIES) + cases('f32', [GEOMETRIES[i] for i in (1, 5, 7)]),
)
def test_conv_and_its_gradients_equal_xla_on_its_inputs(
  compute, shape, k, strides, padding, groups
):
  (conv, rounded), _ = COMPUTES[compute]
  rng = np.random.default_rng(0)
  c = shape[-1]
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  kernel = jnp.asarray(
    rng.standard_normal((k, k, c // groups, 16)) * 0.2, jnp.float32
  )
  geometry = dict(
    window_strides=strides,
    padding=padding,
    dimension_numbers=NHWC,
    feature_group_count=groups,
  )
  ours = functools.partial(conv, **geometry)
  theirs = functools.partial(lax.conv_general_dilated, **geometry)
  y, vjp = jax.vjp(jax.jit(ours), x, kernel)
  assert 'catdog_conv_forward' in jax.jit(ours).lower(x, kernel).as_text()
  want, want_vjp = jax.vjp(theirs, rounded(x), rounded(kernel))
  assert y.dtype == jnp.float32 and y.shape == want.shape
  assert_close(y, want)
  dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  for got, expected in zip(vjp(dy), want_vjp(rounded(dy)), strict=True):
    assert_close(got, expected)


FUSIONS = [
  ((2, 17, 15, 3), 3, 2, 1, True),  # Lite's stem.
  ((2, 8, 8, 16), 1, 1, 1, True),  # An expansion.
  ((2, 9, 9, 16), 3, 1, 16, True),  # Depthwise.
  ((2, 10, 11, 16), 5, 2, 16, True),
  ((2, 8, 8, 16), 1, 1, 1, False),  # A projection: float32 out.
]


@pytest.mark.parametrize(
  'compute, shape, k, strides, groups, relu6',
  cases('bf16', FUSIONS) + cases('f32', FUSIONS[3:]),
)
def test_the_conv_with_bias_and_relu6_equals_xla_on_its_inputs(
  compute, shape, k, strides, groups, relu6
):
  (conv, rounded), _ = COMPUTES[compute]
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal(shape) * 2, jnp.float32)
  kernel = jnp.asarray(
    rng.standard_normal((k, k, shape[-1] // groups, 16)) * 0.5, jnp.float32
  )
  bias = jnp.asarray(rng.standard_normal(16), jnp.float32)
  # Activations in what oneDNN computes in; a projection's in float32.
  dtype = conv.activations if relu6 else jnp.dtype(jnp.float32)

  def ours(x, kernel, bias):
    return conv.fused(
      x, kernel, bias, (strides, strides), 'SAME', groups, relu6, dtype
    )

  def theirs(x, kernel, bias):
    y = lax.conv_general_dilated(
      x, kernel, (strides, strides), 'SAME',
      dimension_numbers=NHWC, feature_group_count=groups,
    ) + bias  # fmt: skip
    if not relu6:
      return y
    # ReLU6 of the sum as written (in bf16, rounded): its gradient is zero
    # where that is 0 or 6 (a sum just under 6 rounds to 6).
    passed = (rounded(y) > 0) & (rounded(y) < 6)
    return jnp.where(passed, y, lax.stop_gradient(jnp.clip(y, 0, 6)))

  assert 'catdog_conv_forward_fused' in (
    jax.jit(ours).lower(x, kernel, bias).as_text()
  )
  y, vjp = jax.vjp(jax.jit(ours), x, kernel, bias)
  want, want_vjp = jax.vjp(theirs, rounded(x), rounded(kernel), bias)
  assert y.dtype == dtype and y.shape == want.shape
  # Within a rounding of what it writes and passes back.
  close = assert_close_to_bf16 if compute == 'bf16' else assert_close
  close(y, want)
  # Values the compute dtype holds exactly, the output gradient oneDNN reads.
  dy = rounded(jnp.asarray(rng.standard_normal(y.shape), jnp.float32))
  (dx, dkernel, dbias) = vjp(dy.astype(dtype))
  want_dx, *want_rest = want_vjp(dy)
  close(dx, want_dx)
  for got, expected in zip((dkernel, dbias), want_rest, strict=True):
    assert_close(got, expected)


def assert_close_to_bf16(got, want):
  """`got` within a bfloat16 rounding of `want` (2**-8 of the largest: a
  sum near 0 or 6 may round to the other side of ReLU6's edge)."""
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(
    got.astype(jnp.float32), want, atol=2**-8 * scale, rtol=2**-8
  )


@needs_onednn
def test_what_it_does_not_cover_is_xlas_conv():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 4)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 4)), jnp.float32)
  dilated = dict(
    window_strides=(1, 1),
    padding='SAME',
    dimension_numbers=NHWC,
    rhs_dilation=(2, 2),
  )
  np.testing.assert_array_equal(
    onednn.conv_general_dilated(x, kernel, **dilated),
    lax.conv_general_dilated(x, kernel, **dilated),
  )


@needs_onednn
def test_it_is_deterministic():
  rng = np.random.default_rng(2)
  x, kernel = random_pair(rng, 8, 20, 20, 16, 3, 32)

  def loss(x, kernel):
    y = onednn.conv_general_dilated(x, kernel, (1, 1), 'SAME', None, None,
                                    NHWC)  # fmt: skip
    return jnp.sum(jnp.sin(y))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  first, second = grad(x, kernel), grad(x, kernel)
  jax.tree.map(np.testing.assert_array_equal, first, second)


def test_other_platforms_lower_xlas_conv():
  # No custom call reaches a GPU or TPU program, oneDNN or not.
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)

  def loss(x, kernel):
    y = onednn.conv_general_dilated(x, kernel, (1, 1), 'SAME', None, None,
                                    NHWC)  # fmt: skip
    return jnp.sum(y**2)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  exported = jax.export.export(grad, platforms=('cuda', 'tpu'))(x, kernel)
  assert 'catdog_conv' not in exported.mlir_module()


@needs_onednn
def test_the_resnet_trains_with_it(flat_dataset):
  config = helpers.tiny_recipe_config(
    flat_dataset, cpu_convolutions='onednn_bf16'
  )
  settings.check_config(config)
  state = state_lib.create_train_state(jax.random.key(0), config, 10)
  images = jnp.zeros((2, 32, 32, 3))
  text = (
    jax.jit(state.apply_fn)
    .lower({'params': state.params, 'batch_stats': state.batch_stats}, images)
    .as_text()
  )
  assert 'catdog_conv_forward' in text


def test_the_fallback_says_what_it_costs_where_the_cpu_has_bf16(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n')
  flags = onednn.cpu_flags(str(cpuinfo))
  assert flags == {'fpu', 'avx512f', 'avx512_bf16'}
  assert '1.5-1.8x' in onednn.fallback_cost(flags)
  assert '1.5-1.8x' in onednn.fallback_cost(frozenset({'amx_bf16'}))
  assert 'float32' in onednn.fallback_cost(frozenset({'avx2'}))
  assert onednn.cpu_flags(str(tmp_path / 'none')) == frozenset()


def test_an_unknown_implementation_is_refused():
  with pytest.raises(UsageError, match='unknown cpu_convolutions'):
    onednn.check_implementation('mkl')


def unavailable():
  raise onednn.Unavailable('not here')


def test_auto_uses_xla_where_onednn_cannot_run(monkeypatch, caplog):
  monkeypatch.setattr(onednn, 'load', unavailable)
  monkeypatch.setattr(onednn, 'load_f32', unavailable)
  onednn.conv_for.cache_clear()
  try:
    caplog.set_level('INFO')
    assert onednn.conv_for('auto') is None
    # One line: why, and what it costs on this CPU.
    [line] = [m for m in caplog.messages if 'Convolutions:' in m]
    expected = onednn.fallback_cost(onednn.cpu_flags())
    assert 'not used: not here' in line and expected in line
    for name in ('onednn_bf16', 'onednn_f32'):
      with pytest.raises(UsageError, match=f'{name}: not here'):
        onednn.conv_for(name)
      with pytest.raises(UsageError, match='use auto or xla'):
        onednn.check_implementation(name)
  finally:
    onednn.conv_for.cache_clear()


@needs_onednn_f32
def test_auto_uses_onednn_float32_where_the_cpu_has_no_bf16(
  monkeypatch, caplog
):
  monkeypatch.setattr(onednn, 'load', unavailable)
  onednn.conv_for.cache_clear()
  try:
    caplog.set_level('INFO')
    assert onednn.conv_for('auto') is onednn.in_float32
    [line] = [m for m in caplog.messages if 'Convolutions:' in m]
    assert line.startswith('Convolutions: oneDNN float32 (')
    assert 'no bf16: not here' in line
  finally:
    onednn.conv_for.cache_clear()


@needs_onednn
def test_calls_from_several_threads_at_once_finish_and_agree():
  """XLA runs independent ops on several threads: each call must wait for
  the one in progress (two OpenMP teams on the same cores livelocked)."""
  rng = np.random.default_rng(3)
  x, kernel = random_pair(rng, 16, 24, 24, 16, 3, 32)

  @jax.jit
  def two_branches(x, kernel):
    # Independent convs: XLA may run them at once.
    conv = functools.partial(
      onednn.conv_general_dilated, window_strides=(1, 1), padding='SAME',
      dimension_numbers=NHWC,
    )  # fmt: skip
    return conv(x, kernel) + conv(x * 2, kernel), conv(x[:, ::2, ::2], kernel)

  want = jax.tree.map(np.asarray, two_branches(x, kernel))
  results = [None] * 4

  def work(i):
    for _ in range(10):
      results[i] = jax.tree.map(np.asarray, two_branches(x, kernel))

  threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=120)
    assert not thread.is_alive(), 'oneDNN calls did not finish'
  for result in results:
    jax.tree.map(np.testing.assert_array_equal, result, want)


def fake_onednn(prefix, version, libdir='lib'):
  """A prefix holding what find_onednn looks for (empty files, a version
  header): nothing is compiled or loaded from it."""
  headers = prefix / 'include' / 'oneapi' / 'dnnl'
  headers.mkdir(parents=True)
  (headers / 'dnnl.hpp').write_text('')
  major, minor, patch = version
  (headers / 'dnnl_version.h').write_text(
    f'#define DNNL_VERSION_MAJOR {major}\n#define DNNL_VERSION_MINOR {minor}\n'
    f'#define DNNL_VERSION_PATCH {patch}\n'
  )
  (prefix / libdir).mkdir(parents=True)
  (prefix / libdir / 'libdnnl.so').write_text('')
  return str(prefix)


def test_the_newest_onednn_is_built_against_unless_a_root_is_set(tmp_path):
  wheels = fake_onednn(tmp_path / 'venv', (3, 2, 0))
  system = fake_onednn(tmp_path / 'usr', (2, 6, 3), 'lib/x86_64-linux-gnu')
  newer = fake_onednn(tmp_path / 'local', (3, 10, 1))
  assert onednn.find_onednn({}, (wheels, system)) == (
    f'{wheels}/include',
    f'{wheels}/lib/libdnnl.so',
  )
  assert onednn.find_onednn({}, (wheels, system, newer))[0] == (
    f'{newer}/include'
  )
  chosen = {onednn.ROOT_ENV: system}
  assert onednn.find_onednn(chosen, (wheels, newer)) == (
    f'{system}/include',
    f'{system}/lib/x86_64-linux-gnu/libdnnl.so',
  )
  with pytest.raises(onednn.Unavailable, match='has no include/oneapi'):
    onednn.find_onednn({onednn.ROOT_ENV: str(tmp_path)}, (wheels,))
  with pytest.raises(onednn.Unavailable, match='pip install onednn-cpu-gomp'):
    onednn.find_onednn({}, (str(tmp_path / 'nothing'),))
