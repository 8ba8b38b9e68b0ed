"""Shared fixtures: synthetic JPEG folders and a trained workdir (helpers.py
holds the plain helpers they use).

Tests compile many tiny steps, where XLA's optimization passes cost more
than they save; they are switched off (as flax's examples' tests do), in
the processes the tests start too (main.py, benchmarks, workers), except
for tests marked `optimized`, which inspect what XLA makes of the code.
XLA:CPU's older loop emitters compile those steps faster than its fusion
emitters (Lite0's tiny training step 3.6 s -> 2.4 s; the fast tier 154 s
-> 121 s on a 2-core Zen 4): switched off for every test too, and back on
(`USERS_XLA`) where a test checks what a user's compile makes.

The programs that take longest to compile are kept on disk between runs
(JAX's persistent cache, `TESTS_COMPILATION_CACHE`), so a run after an edit
compiles only what the edit changed.
"""

import dataclasses
import fcntl
import functools
import importlib
import json
import os
import shutil

import jax
import pytest

from catdog_jax import cli
from catdog_jax import fileio
from catdog_jax import train
from catdog_jax.evaluation import predict
from tests import helpers

jax.config.update('jax_disable_most_optimizations', True)
# Inherited by the processes tests start (JAX reads it when imported).
os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'true'
# Read when the backend starts (at the first computation, after this) and
# by the processes tests start.
os.environ['XLA_FLAGS'] = ' '.join(
  filter(
    None, [os.environ.get('XLA_FLAGS'), '--xla_cpu_use_fusion_emitters=false']
  )
)

# Beside the users' programs (cli.use_compilation_cache), not among them:
# these are compiled with other flags. 127 of the fast tier's 1,881
# programs take 0.05 s or more to compile, 46 of its 67 s; kept, a second
# run of the fast tier takes 92 s instead of 105-110 (2-core Zen 4;
# docs/performance.md). The processes tests start keep the users' setting,
# which tests check.
TESTS_COMPILATION_CACHE = os.path.join(fileio.user_cache_dir(), 'xla-tests')
if not cli.compilation_cache_is_off():
  jax.config.update('jax_compilation_cache_dir', TESTS_COMPILATION_CACHE)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.05)
  # Least recently used programs deleted beyond it (a lock file: filelock).
  jax.config.update('jax_compilation_cache_max_size', 2**30)


# Test files that train whole runs (10-25 s a test): started first, they are
# spread over pytest-xdist's workers, which take one test at a time
# (pyproject.toml), instead of leaving one core waiting at the end. (All
# slow tests first measured slower: 10 min 10 s against 9 min 45 s.)
STARTED_FIRST = ('shipped_configs_test.py', 'whitening_test.py')


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: item.path.name not in STARTED_FIRST)


@pytest.fixture(autouse=True)
def _xla_optimizations(request):
  """XLA's usual optimizations for tests marked `optimized`."""
  if request.node.get_closest_marker('optimized') is None:
    yield
    return
  jax.config.update('jax_disable_most_optimizations', False)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', True)


def shared_folder(tmp_path_factory, name: str, build) -> str:
  """The session's folder `name`, filled by `build(folder)` once for every
  pytest-xdist worker (xdist's recipe: the others wait on a file lock and
  find it made). Tests may read it, never change it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # The workers' common folder.
  folder, made = root / name, root / f'{name}.made'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if not made.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      build(str(folder))
      made.touch()
  return str(folder)


@pytest.fixture(scope='session')
def shared(tmp_path_factory):
  """(name, build) -> `shared_folder`: made once for every worker."""
  return functools.partial(shared_folder, tmp_path_factory)


@pytest.fixture(scope='session')
def flat_dataset(tmp_path_factory):
  return shared_folder(
    tmp_path_factory,
    'flat',
    lambda folder: helpers.write_dataset(folder, 'flat', per_class=40),
  )


@pytest.fixture(scope='session')
def folder_dataset(tmp_path_factory):
  return helpers.write_dataset(
    tmp_path_factory.mktemp('folders'), 'folders', per_class=40
  )


@pytest.fixture(scope='session')
def straight_log_loss(flat_dataset, tmp_path_factory):
  """Test log-loss of a 30-step tiny run on flat_dataset, never interrupted."""
  workdir = tmp_path_factory.mktemp('straight30')
  train.train_and_evaluate(
    helpers.tiny_config(flat_dataset, num_train_steps=30), workdir
  )
  with open(workdir / 'eval_test.json') as f:
    return json.load(f)['log_loss']


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  workdir: str
  state: object  # The final train state train_and_evaluate returned.


@pytest.fixture(scope='session')
def trained_run(folder_dataset, tmp_path_factory):
  """One 40-step tiny run on folder_dataset, shared by every test that needs
  a trained workdir. Tests may regenerate its report, never change its
  checkpoints or metrics."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  state = train.train_and_evaluate(
    helpers.tiny_config(folder_dataset, num_train_steps=40), workdir
  )
  return TrainedRun(workdir, state)


@pytest.fixture(scope='session')
def tiny_runs(flat_dataset, tmp_path_factory):
  """name -> the workdir of shipped config `name`'s `:tiny` variant trained
  (or probed) on flat_dataset through the train mode, once a session for
  every worker (`shared_folder`)."""

  def train(name: str, workdir: str) -> None:
    config = importlib.import_module(f'configs.{name}').get_config('tiny')
    config.data.root = flat_dataset
    cli.run_mode('train', config=config, workdir=workdir, images=None,
                 output=None)  # fmt: skip

  return lambda name: shared_folder(
    tmp_path_factory, f'tiny_{name}', functools.partial(train, name)
  )


@pytest.fixture
def float32_predict(monkeypatch):
  """predict with XLA's float32 convolutions, whatever the workdir's
  cpu_convolutions: the export's numerics and the PyTorch-checked model's
  (oneDNN's bfloat16 moves p(dog) by up to ~7e-3; docs/serving.md)."""
  load_config = predict.load_config

  def in_float32(workdir):
    config = load_config(workdir)
    config.cpu_convolutions = 'xla'
    return config

  monkeypatch.setattr(predict, 'load_config', in_float32)
