"""Tests for catdog_jax.settings' ranges: every numeric setting has one,
and a value outside it is refused in one line naming field, value, range."""

import glob
import importlib
import os

import pytest

from catdog_jax import settings
from catdog_jax import workdir
from catdog_jax.errors import UsageError
from tests import helpers

CONFIGS = sorted(
  os.path.basename(path)[:-3]
  for path in glob.glob(os.path.join(helpers.REPO, 'configs', '*.py'))
  if not path.endswith(('__init__.py', 'common.py'))
)


def flat_configs() -> dict[str, dict]:
  return {
    name: workdir.flatten(
      importlib.import_module(f'configs.{name}').get_config().to_dict()
    )
    for name in CONFIGS
  }


def is_numeric(value) -> bool:
  items = value if isinstance(value, (tuple, list)) else (value,)
  return bool(items) and all(
    isinstance(x, (int, float)) and not isinstance(x, bool) for x in items
  )


def test_every_numeric_setting_of_every_config_has_a_range():
  missing = {
    f'{field} ({name})'
    for name, flat in flat_configs().items()
    for field, value in flat.items()
    if is_numeric(value) and field not in settings.RANGES
  }
  assert not missing


def outside(allowed: settings.Range):
  """A value just outside `allowed`."""
  if allowed.low is not None:
    return allowed.low if allowed.low_open else allowed.low - 1
  return allowed.high if allowed.high_open else allowed.high + 1


@pytest.mark.parametrize('field', sorted(settings.RANGES))
def test_a_value_outside_its_range_is_refused_in_one_line(field):
  # A config that has the field (model fields follow the model).
  name = next(n for n, flat in flat_configs().items() if field in flat)
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.root = '/data'
  allowed = settings.RANGES[field]
  value = outside(allowed)
  if isinstance(workdir.flatten(config.to_dict())[field], (tuple, list)):
    value = (value,)
  *parents, leaf = field.split('.')
  group = config
  for parent in parents:
    group = group[parent]
  group[leaf] = value
  with pytest.raises(UsageError) as error:
    settings.check_ranges(config)
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(field) and f'got {value!r}' in message
  assert str(allowed) in message


def test_ranges_read_as_their_bounds():
  assert str(settings.Range(1)) == 'must be at least 1'
  assert str(settings.Range(0, note='0: none')) == 'must be >= 0 (0: none)'
  assert str(settings.Range(0, 1, high_open=True)) == 'must be in [0, 1)'
  assert 0.5 in settings.Range(0, 1, low_open=True)
  assert 0 not in settings.Range(0, 1, low_open=True)
  assert 1 not in settings.Range(0, 1, high_open=True)
  assert True not in settings.Range(0)  # A switch is no number.
