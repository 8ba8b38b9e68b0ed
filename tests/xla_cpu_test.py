"""The train and eval steps' XLA:CPU options: Eigen instead of YNNPACK."""

import jax
import jax.numpy as jnp
import pytest

from catdog_jax import xla_cpu
from tests import helpers

pytestmark = [
  pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU options'),
  pytest.mark.optimized,
]


def conv(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def matmul(a, b):
  return jnp.tanh(a @ b)


def uses_ynnpack(fn, ynn_types, *args) -> bool:
  options = {**(xla_cpu.compiler_options(ynn_types) or {}), **helpers.USERS_XLA}
  compiled = jax.jit(fn, compiler_options=options).lower(*args).compile()
  return 'ynn_fusion' in compiled.as_text()


# Big enough that XLA's default hands it to YNNPACK (an 8x8x4 one it does not).
CONV_ARGS = (jnp.ones((2, 32, 32, 32)), jnp.ones((3, 3, 32, 32)))
MATMUL_ARGS = (jnp.ones((64, 256)), jnp.ones((256, 128)))


def test_xla_default_gives_both_to_ynnpack():
  # If this fails, a new jaxlib changed its default: re-measure the options.
  assert uses_ynnpack(conv, None, *CONV_ARGS)
  assert uses_ynnpack(matmul, None, *MATMUL_ARGS)


def test_train_step_options_keep_only_matrix_products_on_ynnpack():
  assert not uses_ynnpack(conv, xla_cpu.TRAIN_YNN_TYPES, *CONV_ARGS)
  assert uses_ynnpack(matmul, xla_cpu.TRAIN_YNN_TYPES, *MATMUL_ARGS)


def test_eval_step_options_keep_nothing_on_ynnpack():
  assert not uses_ynnpack(conv, xla_cpu.EVAL_YNN_TYPES, *CONV_ARGS)
  assert not uses_ynnpack(matmul, xla_cpu.EVAL_YNN_TYPES, *MATMUL_ARGS)
