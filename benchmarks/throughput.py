"""Throughput of the train step, the eval step and the input pipeline.

  # Steps alone: batches already on the device, compile and warm-up excluded.
  python benchmarks/throughput.py --config=configs/base.py \
    --config.batch_size=32 --steps=5
  # The input pipeline over a folder (index, read, decode, resize, batch),
  # then training steps fed by it (end to end).
  python benchmarks/throughput.py --config=configs/base.py \
    --images=../shared/data/kaggle-orig --steps=5
  # The host side alone, no model: how fast the training iterator serves
  # batches (cached and decoding) and hands them to the devices, by batch
  # size. One JSON line per path and batch size.
  python benchmarks/throughput.py --config=configs/gpu.py --mode=host \
    --images=../shared/data/kaggle200 --batch_sizes=64,256 --steps=20
  # The on-device augmentation's share of the train step, at each size
  # training runs at (progressive_sizes), beside the same crops resampled
  # by jax.image.scale_and_translate (what crops used before 2026-12-03).
  # One JSON line per size.
  python benchmarks/throughput.py --config=configs/fast_cpu.py \
    --mode=augment --steps=20

Each figure is the median over --steps timed repetitions; the train step's
minor page faults and user and system CPU seconds are per step over its
timed steps. Like main.py it runs under mimalloc unless
CATDOG_JAX_ALLOCATOR=system. The last line printed is JSON.
"""

import functools
import json
import resource
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py, beside this script
from absl import app
from absl import flags
from ml_collections import config_flags

from catdog_jax import allocator
from catdog_jax import augment
from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import state as state_lib
from catdog_jax import train
from catdog_jax.data import augmentation
from catdog_jax.data import dataset
from catdog_jax.data import input_pipeline
from catdog_jax.data import sources
from catdog_jax.evaluation import evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file.')
flags.DEFINE_integer('steps', 5, 'Timed repetitions (the median is kept).')
flags.DEFINE_integer('warmup', 2, 'Untimed repetitions after compiling.')
flags.DEFINE_string('images', None, 'Folder: time the input pipeline on it.')
flags.DEFINE_enum(
  'mode',
  None,
  ['steps', 'input', 'host', 'augment'],
  'steps: the jitted steps alone; input: the pipeline over --images, then '
  'steps fed by it; host: the training iterator alone, by batch size; '
  'augment: the train step and its augmentation alone, by training size. '
  'Default: input with --images, else steps.',
)
flags.DEFINE_list('batch_sizes', ['64', '256'], 'host: batch sizes to time.')
flags.DEFINE_list(
  'decode_workers',
  ['1', '2'],
  'host: decode threads of the uncached path, and processes of the same '
  'pipeline under grain multiprocessing (not what training uses: measured '
  'to compare).',
)
flags.DEFINE_integer(
  'max_images', 4096, 'host: index and cache at most this many images.'
)
flags.mark_flags_as_required(['config'])


def compiled_steps(config):
  """(state, train step, eval step, batch sharding), compiled for config."""
  data_sharding, replicated = mesh.create_shardings()
  state = jax.jit(
    lambda rng: state_lib.create_train_state(rng, config, FLAGS.steps),
    out_shardings=replicated,
  )(jax.random.key(0))
  train_fn = train.compile_train_step(
    config, FLAGS.steps, data_sharding, replicated
  )
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
  return state, train_fn, eval_fn, data_sharding


def time_steps(config) -> dict:
  """Images/s of the train and eval steps on a batch already on the device."""
  state, train_fn, eval_fn, sharding = compiled_steps(config)
  size, batch_size = config.data.image_size, config.batch_size
  rng = np.random.default_rng(0)
  batch = mesh.to_global({
    'image': rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
    'label': rng.integers(0, 2, (batch_size,), np.int32),
    'mask': np.ones((batch_size,), bool),
  }, sharding)  # fmt: skip
  train_batch = {k: batch[k] for k in ('image', 'label')}
  step_rng = jax.random.key(1)
  holder = {'state': state}

  def one_train_step():
    holder['state'], metrics = train_fn(holder['state'], train_batch, step_rng)
    jax.block_until_ready(metrics)

  def one_eval_step():
    variables = evaluate.eval_variables(holder['state'])
    jax.block_until_ready(eval_fn(variables, batch))

  for _ in range(FLAGS.warmup):  # First touches of fresh memory included.
    one_train_step()
  before = resource.getrusage(resource.RUSAGE_SELF)
  train_seconds = timing.median_seconds(one_train_step, FLAGS.steps, 0)
  after = resource.getrusage(resource.RUSAGE_SELF)
  eval_seconds = timing.median_seconds(one_eval_step, FLAGS.steps, FLAGS.warmup)
  steps = FLAGS.steps
  return {
    'train_images_per_sec': batch_size / train_seconds,
    'eval_images_per_sec': batch_size / eval_seconds,
    'train_minor_faults_per_step': (after.ru_minflt - before.ru_minflt) / steps,
    'train_system_seconds_per_step': (after.ru_stime - before.ru_stime) / steps,
    'train_user_seconds_per_step': (after.ru_utime - before.ru_utime) / steps,
  }


def scale_and_translate_crop(rng, image, min_area: float, size: int):
  """augment.random_resized_crop's crop, resampled by jax.image."""
  top, left, crop_h, crop_w = augment.random_crop_box(
    rng, image.shape[:2], min_area
  )
  scale = jnp.stack([size / crop_h, size / crop_w])
  return jax.image.scale_and_translate(
    image,
    (size, size, image.shape[-1]),
    spatial_dims=(0, 1),
    scale=scale,
    translation=-jnp.stack([top, left]) * scale,
    method='linear',
    antialias=False,
  )


def time_augment(config) -> list[dict]:
  """Per training size: seconds of the train step, of its augmentation
  alone and, with crops on, of the same crops by jax.image."""
  data_sharding, replicated = mesh.create_shardings()
  state = jax.jit(
    lambda rng: state_lib.create_train_state(rng, config, FLAGS.steps),
    out_shardings=replicated,
  )(jax.random.key(0))
  holder = {'state': state}
  cache_size, batch_size = config.data.image_size, config.batch_size
  rng = np.random.default_rng(0)
  batch = mesh.to_global({
    'image': rng.integers(0, 256, (batch_size, cache_size, cache_size, 3),
                          np.uint8),
    'label': rng.integers(0, 2, (batch_size,), np.int32),
  }, data_sharding)  # fmt: skip
  images = jax.jit(models.preprocess)(batch['image'])
  rngs = jax.random.split(jax.random.key(1), batch_size)
  rows = []
  for size in sorted(set(config.progressive_sizes or (cache_size,))):
    train_fn = train.compile_train_step(
      config, FLAGS.steps, data_sharding, replicated, image_size=size
    )

    def one_train_step(train_fn=train_fn):
      holder['state'], metrics = train_fn(
        holder['state'], batch, jax.random.key(1)
      )
      jax.block_until_ready(metrics)

    augment_fn = jax.jit(
      functools.partial(augment.augment, config=config.augment, size=size)
    )
    row = {
      'train_size': size,
      'train_step_seconds': timing.median_seconds(
        one_train_step, FLAGS.steps, FLAGS.warmup
      ),
      'augment_seconds': timing.median_seconds(
        lambda f=augment_fn: jax.block_until_ready(f(rngs[0], images)),
        FLAGS.steps,
        FLAGS.warmup,
      ),
    }
    if augmentation.crops(config.augment):
      crop_fn = jax.jit(
        jax.vmap(
          functools.partial(
            scale_and_translate_crop,
            min_area=config.augment.crop_min_area,
            size=size,
          )
        )
      )
      row['scale_and_translate_crop_seconds'] = timing.median_seconds(
        lambda f=crop_fn: jax.block_until_ready(f(rngs, images)),
        FLAGS.steps,
        FLAGS.warmup,
      )
    rows.append(row)
  return rows


def time_input(config) -> dict:
  """Images/s of the input pipeline, and of training fed by it."""
  start = time.perf_counter()
  source = sources.FolderSource(FLAGS.images)
  examples = dataset.build_index(source, config.data).examples
  index_seconds = time.perf_counter() - start

  def one_pass():
    for _ in input_pipeline.eval_batches(
      examples, source, config.data, batch_size=config.batch_size
    ):
      pass

  pass_seconds = timing.median_seconds(one_pass, FLAGS.steps, warmup=1)

  state, train_fn, _, sharding = compiled_steps(config)
  iterator = input_pipeline.create_train_iterator(
    examples, source, config.data, batch_size=config.batch_size, seed=0
  )
  holder = {'state': state}

  def one_fed_step():
    batch = mesh.to_global(next(iterator), sharding)
    holder['state'], metrics = train_fn(
      holder['state'], batch, jax.random.key(1)
    )
    jax.block_until_ready(metrics)

  fed_seconds = timing.median_seconds(one_fed_step, FLAGS.steps, FLAGS.warmup)
  return {
    'images': len(examples),
    'index_seconds': index_seconds,
    'input_images_per_sec': len(examples) / pass_seconds,
    'end_to_end_train_images_per_sec': config.batch_size / fed_seconds,
  }


def host_batches_per_sec(iterator, sharding) -> float:
  """Median batches/s of next() plus the hand-over to the devices."""

  def one_batch():
    jax.block_until_ready(mesh.to_global(next(iterator), sharding))

  return 1 / timing.median_seconds(one_batch, FLAGS.steps, FLAGS.warmup)


def decoding_processes(examples, source, config, batch_size, processes):
  """The decoding training iterator with its decoding in `processes` grain
  worker processes instead of threads."""
  load = functools.partial(
    input_pipeline.load_example, source=source, image_size=config.image_size
  )
  ds = input_pipeline.TrainOrder(len(examples), seed=0).dataset()
  ds = ds.map(lambda i: load(examples[i])).to_iter_dataset()
  ds = ds.batch(batch_size, drop_remainder=True)
  return iter(ds.mp_prefetch(grain.MultiprocessingOptions(processes)))


def time_host(config) -> list[dict]:
  """Images/s the training iterator serves, cached and decoding, no model."""
  source = sources.FolderSource(FLAGS.images)
  examples = dataset.build_index(source, config.data).examples
  examples = examples[: FLAGS.max_images]
  data_sharding, _ = mesh.create_shardings()
  cached = input_pipeline.load_all(examples, source, config.data)
  paths = [('cached', None)]
  paths += [('decoded', int(n)) for n in FLAGS.decode_workers]
  paths += [('decoded_processes', int(n)) for n in FLAGS.decode_workers]
  rows = []
  for path, workers in paths:
    data = config.data.copy_and_resolve_references()
    data.cache = False  # `cached` alone decides.
    data.num_workers = workers or data.num_workers
    for batch_size in map(int, FLAGS.batch_sizes):
      if path == 'decoded_processes':
        iterator = decoding_processes(
          examples, source, data, batch_size, workers
        )
      else:
        iterator = input_pipeline.create_train_iterator(
          examples, source, data, batch_size=batch_size, seed=0,
          cached=cached if path == 'cached' else None,
        )  # fmt: skip
      rate = host_batches_per_sec(iterator, data_sharding) * batch_size
      rows.append({
        'path': path,
        'decode_workers': workers,
        'batch_size': batch_size,
        'host_images_per_sec': rate,
      })  # fmt: skip
  return rows


def main(argv):
  del argv
  config = FLAGS.config
  mode = FLAGS.mode or ('input' if FLAGS.images else 'steps')
  common = {
    'device': jax.devices()[0].device_kind,
    'num_devices': jax.device_count(),
    'image_size': config.data.image_size,
    'steps': FLAGS.steps,
    'mode': mode,
    'allocator': 'mimalloc' if allocator.is_loaded() else 'system',
  }
  if mode in ('host', 'augment'):
    rows = time_host(config) if mode == 'host' else time_augment(config)
    for row in rows:
      print(json.dumps({**row, **common}))
    return
  result = time_input(config) if mode == 'input' else time_steps(config)
  result.update(common)
  result.update({'batch_size': config.batch_size, 'dtype': config.dtype})
  print(json.dumps(result))


if __name__ == '__main__':
  allocator.reexec_with_mimalloc()
  app.run(main)
