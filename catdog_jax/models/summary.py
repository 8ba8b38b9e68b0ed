"""The per-layer table of a model, as Keras' `model.summary()` shows it."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from catdog_jax import models


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


@functools.cache
def summarize(model: nn.Module, image_size: int) -> tuple[tuple, ...]:
  """Per-layer (name, type, output shape, parameters) rows, as Keras shows.

  Runs on abstract shapes only, so no memory is spent on the parameters;
  traced once per model and size in a process (the report asks twice).
  A layer whose `__call__` calls its parent class's (a subclass of a flax
  layer) is intercepted twice; it is listed once, by its own class. The
  layers are those of the model as written: with XLA's convolutions (a
  oneDNN conv_fn folds BatchNorms into the convs before them).
  """
  if getattr(model, 'conv_fn', None) is not None:
    model = model.clone(conv_fn=None)
  rows = {}

  def record_layer(next_fn, args, kwargs, context):
    output = next_fn(*args, **kwargs)
    module = context.module
    # The model's direct children are its layers.
    if context.method_name == '__call__' and len(module.scope.path) == 1:
      params = module.variables.get('params', {})
      shape = ('None',) + tuple(output.shape[1:])
      # The outermost call returns last: it overwrites the inner one.
      rows[module.name] = (
        module.name, type(module).__name__, shape, count_params(params)
      )  # fmt: skip
    return output

  def init(images):
    with nn.intercept_methods(record_layer):
      return model.init(jax.random.key(0), images)

  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8)
  jax.eval_shape(init, images)
  return tuple(rows.values())


def format_summary(rows: Sequence[tuple]) -> str:
  """Renders `summarize` rows as a table with the total parameter count."""
  header = ('Layer', 'Type', 'Output shape', 'Param #')
  cells = [header] + [
    (name, kind, str(shape).replace("'", ''), f'{n:,}')
    for name, kind, shape, n in rows
  ]
  widths = [max(len(row[i]) for row in cells) + 2 for i in range(4)]
  rule = '-' * sum(widths)
  lines = [rule]
  for i, row in enumerate(cells):
    lines.append(
      ''.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
    )
    if i == 0:
      lines.append(rule)
  lines.append(rule)
  lines.append(f'Total params: {sum(r[3] for r in rows):,}')
  return '\n'.join(lines)


def model_summary(config: ml_collections.ConfigDict) -> str:
  """The table of the model `config` trains, at its image size."""
  model = models.create_model(config.model)
  return format_summary(summarize(model, config.data.image_size))
