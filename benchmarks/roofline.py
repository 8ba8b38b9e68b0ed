"""A roofline estimate for every shipped config on accelerators we lack.

  python benchmarks/roofline.py                 # JSON lines
  python benchmarks/roofline.py --markdown      # the README's table

For each config: FLOPs and bytes per image of the train step (at each
training size, weighted by its share of the steps) and of the eval step,
from XLA's cost analysis of the steps training compiles, here on the CPU
(the bytes are those of XLA:CPU's fused program: XLA:GPU and XLA:TPU fuse
more, so they move fewer). From them, the least time a step can take on a
device (the larger of FLOPs / peak and bytes / memory bandwidth) and the
images/s the host must then feed. An estimate, not a measurement.
"""

import ast
import dataclasses
import functools
import importlib
import json

import jax
import jax.numpy as jnp
from absl import app
from absl import flags

from catdog_jax import mesh
from catdog_jax import state as state_lib
from catdog_jax import train
from catdog_jax.evaluation import evaluate

FLAGS = flags.FLAGS
flags.DEFINE_list(
  'configs',
  ['base', 'quick_cpu', 'fast_cpu', 'seed_cnn_tuned', 'gpu', 'tpu'],
  'Configs.',
)
flags.DEFINE_bool('markdown', False, 'Print the README table instead.')
flags.DEFINE_multi_string(
  'set', [], 'Override for every config, key=value (e.g. data.image_size=32).'
)


@dataclasses.dataclass(frozen=True)
class Device:
  name: str
  bf16_flops: float  # Dense peak, FLOP/s.
  f32_flops: float  # What float32 convolutions and matmuls run at.
  bandwidth: float  # Memory bandwidth, bytes/s.


# Datasheet peaks. float32 on an H100 is JAX's default precision on GPU:
# TF32 tensor cores; on a TPU, float32 matmuls default to bfloat16 passes.
DEVICES = (
  Device('H100 SXM', 989e12, 494e12, 3.35e12),
  Device('TPU v5e', 197e12, 197e12, 0.819e12),
)


def step_costs(step, *args) -> tuple[float, float]:
  """(FLOPs, bytes accessed) of one call, from XLA's cost analysis."""
  cost = step.lower(*args).compile().cost_analysis()
  return cost['flops'], cost['bytes accessed']


def per_image_costs(config) -> dict[str, float]:
  """Train and eval FLOPs and bytes per image."""
  data_sharding, replicated = mesh.create_shardings()
  state = state_lib.abstract_state(config, replicated)
  size, batch_size = config.data.image_size, config.batch_size
  batch = {
    'image': jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.uint8),
    'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32),
  }
  rng = jax.eval_shape(lambda: jax.random.key(0))
  sizes = config.progressive_sizes or (size,)
  train_flops = train_bytes = 0.0
  for train_size in sizes:  # Each size trains an equal share of the steps.
    step = train.compile_train_step(
      config, 100, data_sharding, replicated, train_size
    )
    flops, nbytes = step_costs(step, state, batch, rng)
    train_flops += flops / len(sizes) / batch_size
    train_bytes += nbytes / len(sizes) / batch_size
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
  eval_batch = {
    **batch,
    'mask': jax.ShapeDtypeStruct((batch_size,), jnp.bool_),
  }
  flops, nbytes = step_costs(
    eval_fn, evaluate.eval_variables(state), eval_batch
  )
  return {
    'train_flops_per_image': train_flops,
    'train_bytes_per_image': train_bytes,
    'eval_flops_per_image': flops / batch_size,
    'eval_bytes_per_image': nbytes / batch_size,
  }


def bounds_images_per_sec(flops, nbytes, device, dtype) -> tuple[float, float]:
  """(images/s if memory-bound, images/s if compute-bound) per image costs.

  The roofline is the smaller. XLA:CPU's byte counts overstate what a
  GPU or TPU moves, so the truth lies between the two.
  """
  peak = device.bf16_flops if dtype == 'bfloat16' else device.f32_flops
  return device.bandwidth / nbytes, peak / flops


def roofline(name: str, overrides: dict | None = None) -> dict:
  """The roofline row of configs/`name`.py, with `overrides` ('a.b': value)."""
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.root = '/data'
  config.update_from_flattened_dict(overrides or {})
  costs = per_image_costs(config)
  row = {'config': name, 'dtype': config.dtype, **costs}
  for device in DEVICES:
    bounds = functools.partial(
      bounds_images_per_sec, device=device, dtype=config.dtype
    )
    for kind in ('train', 'eval'):
      memory, compute = bounds(
        costs[f'{kind}_flops_per_image'], costs[f'{kind}_bytes_per_image']
      )
      row[f'{device.name} {kind} memory-bound images/s'] = memory
      row[f'{device.name} {kind} compute-bound images/s'] = compute
  return row


def markdown(rows: list[dict]) -> str:
  """The README table: per device, train and eval images/s from the memory
  bound to the compute bound."""
  names = [device.name for device in DEVICES]
  header = (
    '| config | dtype | train GFLOP / MB per image | eval GFLOP / MB per '
    'image | '
    + ' | '.join(f'{n}: train images/s | {n}: eval images/s' for n in names)
    + ' |'
  )
  lines = [header, '|' + '---|' * (4 + 2 * len(names))]
  for row in rows:
    cells = [
      f'`{row["config"]}`',
      row['dtype'],
      f'{row["train_flops_per_image"] / 1e9:.2f} / '
      f'{row["train_bytes_per_image"] / 1e6:.0f}',
      f'{row["eval_flops_per_image"] / 1e9:.2f} / '
      f'{row["eval_bytes_per_image"] / 1e6:.0f}',
    ]
    cells += [
      f'{row[f"{n} {kind} memory-bound images/s"]:,.0f} to '
      f'{row[f"{n} {kind} compute-bound images/s"]:,.0f}'
      for n in names
      for kind in ('train', 'eval')
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def parse_overrides(pairs: list[str]) -> dict:
  """['a.b=3', 'c=(1,2)'] -> {'a.b': 3, 'c': (1, 2)}."""
  overrides = {}
  for pair in pairs:
    key, value = pair.split('=', 1)
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value  # A plain string.
  return overrides


def main(argv):
  del argv
  overrides = parse_overrides(FLAGS.set)
  rows = [roofline(name, overrides) for name in FLAGS.configs]
  if FLAGS.markdown:
    print(markdown(rows))
  else:
    for row in rows:
      print(json.dumps(row))


if __name__ == '__main__':
  app.run(main)
