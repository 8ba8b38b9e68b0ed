"""Every shipped config's train and eval steps lower for GPU and TPU.

No GPU or TPU is needed: `jax.export` lowers for a named platform on any
machine and refuses custom calls that platform cannot run. So an op without
a GPU or TPU lowering, or a CPU-only call leaking into the steps, fails here
instead of in a user's first accelerator run. The steps are the ones
training compiles (`compile_train_step`, `compile_eval_step`), at small
shapes: a 32 px input, batch 4, every distinct training size.
"""

import importlib

import jax
import jax.numpy as jnp
import pytest
from jax import export
from jax.extend import core
from jax.interpreters import mlir

from catdog_jax import mesh
from catdog_jax import settings
from catdog_jax import state as state_lib
from catdog_jax import train
from catdog_jax.evaluation import evaluate
from tests import configs_test

PLATFORMS = ('cuda', 'tpu')
SIZE, BATCH = 32, 4


def small_config(name: str):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.root = '/data'
  config.data.image_size = SIZE
  config.batch_size = BATCH
  if config.progressive_sizes:
    config.progressive_sizes = (SIZE // 2, SIZE)
  settings.check_config(config)
  return config


def batch_shapes(with_mask: bool) -> dict:
  shapes = {
    'image': jax.ShapeDtypeStruct((BATCH, SIZE, SIZE, 3), jnp.uint8),
    'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32),
  }
  if with_mask:
    shapes['mask'] = jax.ShapeDtypeStruct((BATCH,), jnp.bool_)
  return shapes


def is_backbone(name: str) -> bool:
  """Whether the config loads pretrained weights: those graphs take seconds
  each to lower (slow tier)."""
  config = importlib.import_module(f'configs.{name}').get_config()
  return bool(config.model.get('init_from'))


@pytest.mark.parametrize(
  'name',
  [
    pytest.param(name, marks=pytest.mark.slow) if is_backbone(name) else name
    for name in configs_test.CONFIGS
  ],
)
def test_steps_lower_for_gpu_and_tpu(name):
  config = small_config(name)
  data_sharding, replicated = mesh.create_shardings()
  state = state_lib.abstract_state(config, replicated)
  rng = jax.eval_shape(lambda: jax.random.key(0))
  for size in config.progressive_sizes or (SIZE,):
    step = train.compile_train_step(config, 10, data_sharding, replicated, size)
    exported = export.export(step, platforms=PLATFORMS)(
      state, batch_shapes(False), rng
    )
    assert exported.platforms == PLATFORMS
    shapes = [aval.shape for aval in exported.in_avals]
    assert (BATCH, SIZE, SIZE, 3) in shapes
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
  exported = export.export(eval_fn.jitted, platforms=PLATFORMS)(
    evaluate.eval_variables(state), batch_shapes(True), eval_fn.temperature
  )
  assert exported.platforms == PLATFORMS
  # Logits, labels and mask, one per example.
  assert [aval.shape for aval in exported.out_avals] == [(BATCH,)] * 3


def test_an_op_with_a_cpu_lowering_only_is_refused():
  """The check can fail: a primitive only the CPU can lower."""
  double = core.Primitive('cpu_only_double')
  double.def_abstract_eval(lambda x: x)
  mlir.register_lowering(
    double,
    mlir.lower_fun(lambda x: x * 2, multiple_results=False),
    platform='cpu',
  )
  fn = jax.jit(double.bind)
  args = jax.ShapeDtypeStruct((3,), jnp.float32)
  assert export.export(fn, platforms=('cpu',))(args).platforms == ('cpu',)
  with pytest.raises(NotImplementedError, match='not found for platforms'):
    export.export(fn, platforms=PLATFORMS)(args)
