"""XLA:CPU compiler options of the train and eval steps.

jaxlib 0.10's XLA:CPU hands convolutions above a small size, matrix products
and reductions to YNNPACK. On this project's 2-core AVX-512 CPU, XLA's own
(Eigen) convolutions ran the seed CNN's and the ResNet's layers about twice
as fast, forward and both gradients. Training keeps YNNPACK's reductions
(the ResNet's step ran at ~200 images/s without them, ~320 with) and matrix
products; evaluation ran fastest with YNNPACK off altogether.
benchmarks/formulations.py measures both steps against XLA's default.
"""

import jax

YNN_FUSION_TYPE = 'xla_cpu_experimental_ynn_fusion_type'
# What each step leaves to YNNPACK (XLA's LibraryFusionType names).
TRAIN_YNN_TYPES = (
  'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT',
  'LIBRARY_FUSION_TYPE_REDUCE',
)
EVAL_YNN_TYPES = ()


def compiler_options(ynn_types) -> dict[str, str] | None:
  """`jax.jit` compiler_options on the CPU backend; None (defaults) elsewhere.

  Args:
    ynn_types: the LibraryFusionType names YNNPACK may take, or None for
      XLA's default.
  """
  if ynn_types is None or jax.default_backend() != 'cpu':
    return None
  return {YNN_FUSION_TYPE: ','.join(ynn_types)}
