"""The training loss: binary cross-entropy of the dog logit."""

import jax.numpy as jnp
import optax


def binary_cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example loss (not averaged); smoothing pulls targets towards 0.5."""
  targets = labels.astype(jnp.float32)
  targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
  return optax.sigmoid_binary_cross_entropy(logits, targets)
