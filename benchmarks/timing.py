"""The one timing rule of the benchmark scripts.

Imports neither JAX nor TensorFlow, so keras_reference.py (run in a
TensorFlow virtualenv) times exactly as throughput.py does.
"""

import statistics
import time


def median_seconds(fn, repetitions: int, warmup: int) -> float:
  """Median wall time of fn(), which must block until its work is done."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repetitions):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)
