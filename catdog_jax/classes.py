"""The two classes and the one rule that turns a logit into a class.

Every module that names a class or decides one imports it from here: the
training accuracy, the metrics, predictions, the report and Grad-CAM all
call a photo a dog by the same test.
"""

CLASS_NAMES = ('cat', 'dog')  # Class ids 0 and 1; dog is the positive class.


def is_dog(logits):
  """True where the dog logit is at least 0 (p(dog) >= 0.5).

  Works on NumPy and JAX arrays alike, inside or outside jit.
  """
  return logits >= 0


def class_name(logit) -> str:
  return CLASS_NAMES[int(is_dog(logit))]
