"""Grad-CAM: where in an image the prediction came from, by JAX autodiff.

The activations entering a layer (by default the last pooling layer: the last
convolutional block's ReLU output in the seed CNN, the last feature map before
global average pooling in ResNet and MiniXception) are weighted by the mean
gradient of the predicted class's logit with respect to them (Selvaraju et
al., 2017).
"""

import functools

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from catdog_jax import classes
from catdog_jax import models
from catdog_jax.models import summary

POOLING_LAYERS = ('MaxPool2x2', 'GlobalAvgPool')


def last_pooling_layer(model: nn.Module, image_size: int) -> str | None:
  """Name of the model's last pooling layer (MaxPool2x2 or GlobalAvgPool),
  None if it has none (a ViT)."""
  rows = summary.summarize(model, image_size)
  names = [name for name, kind, _, _ in rows if kind in POOLING_LAYERS]
  return names[-1] if names else None


def _forward(apply_fn, variables, images_bhwc, layer, delta):
  """Logits, with `delta` added to the input of `layer`; and that input."""
  captured = []

  def add_delta(next_fn, args, kwargs, context):
    if context.module.name == layer and context.method_name == '__call__':
      captured.append(args[0])
      args = (args[0] + delta, *args[1:])
    return next_fn(*args, **kwargs)

  with nn.intercept_methods(add_delta):
    logits = apply_fn(variables, models.preprocess(images_bhwc))
  return logits, captured[0]


@functools.partial(jax.jit, static_argnames=('apply_fn', 'layer'))
def _cams(apply_fn, variables, images_bhwc, layer: str):
  """Grad-CAM maps [B, h, w] at the layer's resolution, each scaled to 1."""
  shape = jax.eval_shape(
    lambda x: _forward(apply_fn, variables, x, layer, 0.0)[1], images_bhwc
  ).shape

  def score(delta):
    logits, activations = _forward(
      apply_fn, variables, images_bhwc, layer, delta
    )
    # Explain the predicted class: the dog logit, or minus it for cats.
    sign = jnp.where(classes.is_dog(logits), 1.0, -1.0)
    return jnp.sum(jax.lax.stop_gradient(sign) * logits), activations

  grads, activations = jax.grad(score, has_aux=True)(jnp.zeros(shape))
  weights = grads.mean(axis=(1, 2), keepdims=True)
  cams = jax.nn.relu((weights * activations).sum(axis=-1))
  return cams / jnp.maximum(cams.max(axis=(1, 2), keepdims=True), 1e-12)


def gradcam(apply_fn, variables, images_bhwc, layer: str) -> np.ndarray:
  """Heatmaps in [0, 1], shape [B, H, W] of the images, for the predicted class.

  Compiled once per model, layer and batch shape.

  Args:
    apply_fn: the model's apply function.
    variables: its variables, as evaluation uses them.
    images_bhwc: uint8 images, as the input pipeline gives them.
    layer: the layer whose input is explained.
  """
  cams = np.asarray(_cams(apply_fn, variables, images_bhwc, layer))
  height, width = images_bhwc.shape[1:3]
  return np.stack([cv2.resize(cam, (width, height)) for cam in cams])
