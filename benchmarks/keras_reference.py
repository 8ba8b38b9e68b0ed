"""Keras references, timed the way benchmarks/throughput.py times ours.

Needs TensorFlow (and the absl-py it brings), which is not a project
dependency; use its own virtualenv:

  python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu
  /tmp/tf/bin/python benchmarks/keras_reference.py --batch_size=32 --steps=5
  /tmp/tf/bin/python benchmarks/keras_reference.py --model=cpu_resnet \
    --batch_size=64 --image_size=160 [--policy=mixed_bfloat16]

--model=seed builds the seed as the seed did (Sequential: three Conv2D 3x3
+ MaxPooling2D 2x2 blocks of 32, 64, 128 filters with SAME padding,
Flatten, Dense 128, 64, 32 with ReLU, Dense 1 sigmoid; Adam 1e-3, binary
cross-entropy). --model=cpu_resnet builds the CPU configs' network
(configs/common.py: a frozen 3x3 stride-2 stem of 32, a 2x2 max pool,
BatchNorm, one residual block per stage of 32, 64, 128, 256, global
average pooling, one logit). Either is timed with `train_on_batch` and
`predict_on_batch` on one batch already in memory: median of --steps after
--warmup, in float32 or the --policy given. With --images=PATH it instead
times one tf.data pass over the JPEGs there (`tf.io.decode_jpeg` +
`tf.image.resize`, AUTOTUNE, batched), the reference for our input pipeline.
Prints one JSON line.
"""

import json

import numpy as np
import tensorflow as tf
import timing  # benchmarks/timing.py, beside this script
from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_integer('batch_size', 32, 'Batch size.')
flags.DEFINE_integer('image_size', 255, 'Image side.')
flags.DEFINE_integer('steps', 5, 'Timed steps (the median is kept).')
flags.DEFINE_integer('warmup', 2, 'Untimed steps first.')
flags.DEFINE_string(
  'images', None, 'Folder: time a tf.data decode + resize pipeline over it.'
)
flags.DEFINE_enum('model', 'seed', ['seed', 'cpu_resnet'], 'What to time.')
flags.DEFINE_string('policy', 'float32', 'Keras dtype policy.')


def seed_model(image_size: int) -> tf.keras.Model:
  layers = tf.keras.layers
  model = tf.keras.Sequential([tf.keras.Input((image_size, image_size, 3))])
  for filters in (32, 64, 128):
    model.add(layers.Conv2D(filters, 3, padding='same', activation='relu'))
    model.add(layers.MaxPooling2D(2, padding='same'))
  model.add(layers.Flatten())
  for units in (128, 64, 32):
    model.add(layers.Dense(units, activation='relu'))
  model.add(layers.Dense(1, activation='sigmoid'))
  model.compile(
    optimizer=tf.keras.optimizers.Adam(1e-3),
    loss='binary_crossentropy',
    metrics=['accuracy'],
  )
  return model


def residual_block(x, features: int, strides: int):
  """models/resnet.py's ResidualBlock, in Keras."""
  layers = tf.keras.layers
  y = layers.Conv2D(features, 3, strides, padding='same')(x)
  y = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(y))
  y = layers.Conv2D(features, 3, padding='same')(y)
  y = layers.BatchNormalization(
    momentum=0.9, epsilon=1e-5, gamma_initializer='zeros'
  )(y)
  if x.shape[-1] != features or strides != 1:
    x = layers.Conv2D(features, 1, strides, padding='same')(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
  return layers.ReLU()(layers.Add()([x, y]))


def cpu_resnet(image_size: int) -> tf.keras.Model:
  """The CPU configs' ResNet-10 at half width, frozen stem and its pool."""
  layers = tf.keras.layers
  inputs = tf.keras.Input((image_size, image_size, 3))
  stem = layers.Conv2D(32, 3, 2, padding='same', trainable=False)
  x = layers.MaxPooling2D(2)(stem(inputs))
  x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x))
  for i, width in enumerate((32, 64, 128, 256)):
    x = residual_block(x, width, 1 if i == 0 else 2)
  x = layers.GlobalAveragePooling2D()(x)
  outputs = layers.Dense(1, activation='sigmoid', dtype='float32')(x)
  model = tf.keras.Model(inputs, outputs)
  model.compile(
    optimizer=tf.keras.optimizers.AdamW(1e-3),
    loss='binary_crossentropy',
    metrics=['accuracy'],
  )
  return model


def tf_data_images_per_sec(folder: str) -> dict:
  """Images/s of one tf.data pass: read, decode, resize to 255, batch."""
  paths = tf.io.gfile.glob(f'{folder}/*/*.jpg')

  def load(path):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    return tf.image.resize(image, (FLAGS.image_size, FLAGS.image_size))

  dataset = (
    tf.data.Dataset.from_tensor_slices(paths)
    .map(load, num_parallel_calls=tf.data.AUTOTUNE)
    .batch(FLAGS.batch_size)
    .prefetch(tf.data.AUTOTUNE)
  )

  def one_pass():
    for _ in dataset:
      pass

  seconds = timing.median_seconds(one_pass, FLAGS.steps, warmup=1)
  return {'tf_data_images_per_sec': len(paths) / seconds, 'images': len(paths)}


def main(argv):
  del argv
  args = FLAGS
  if args.images:
    print(json.dumps({**tf_data_images_per_sec(args.images),
                      'tensorflow': tf.__version__}))  # fmt: skip
    return

  tf.keras.mixed_precision.set_global_policy(args.policy)
  build = {'seed': seed_model, 'cpu_resnet': cpu_resnet}[args.model]
  model = build(args.image_size)
  rng = np.random.default_rng(0)
  shape = (args.batch_size, args.image_size, args.image_size, 3)
  images = rng.integers(0, 256, shape).astype(np.float32) / 255.0
  labels = rng.integers(0, 2, (args.batch_size, 1)).astype(np.float32)
  train_seconds = timing.median_seconds(
    lambda: model.train_on_batch(images, labels), args.steps, args.warmup
  )
  eval_seconds = timing.median_seconds(
    lambda: model.predict_on_batch(images), args.steps, args.warmup
  )
  print(json.dumps({
    'keras_train_images_per_sec': args.batch_size / train_seconds,
    'keras_eval_images_per_sec': args.batch_size / eval_seconds,
    'model': args.model,
    'policy': args.policy,
    'params': model.count_params(),
    'tensorflow': tf.__version__,
    'batch_size': args.batch_size,
    'image_size': args.image_size,
    'steps': args.steps,
  }))  # fmt: skip


if __name__ == '__main__':
  app.run(main)
