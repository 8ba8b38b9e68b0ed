"""The package's shape: imports point down, families depend on what they
should, configs come from one recipe.

Read from the source with `ast`, so these hold without importing anything.
Module names are relative to the package: 'train', 'data.dataset',
'models' (the subpackage's __init__), 'models.layers'.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'catdog_jax'
# The root modules every family may use.
SHARED = {'errors', 'classes', 'fileio', 'workdir'}
TRAINERS = {'train', 'probe', 'run', 'settings'}
# What only training needs: inference restores a model without them.
TRAINING_PARTS = TRAINERS | {'loop', 'state', 'augment', 'optimizer'}


def module_names(package: str) -> dict[str, str]:
  """{'data.dataset': path} for every module under the package folder."""
  root = os.path.join(REPO, package)
  names = {}
  for folder, _, files in os.walk(root):
    relative = os.path.relpath(folder, root)
    prefix = '' if relative == '.' else relative.replace(os.sep, '.') + '.'
    for name in files:
      if not name.endswith('.py'):
        continue
      module = name[:-3]
      if module == '__init__':
        if not prefix:
          continue
        names[prefix[:-1]] = os.path.join(folder, name)
      else:
        names[prefix + module] = os.path.join(folder, name)
  return names


def imported_modules(path: str, package: str, known) -> set[str]:
  """Names of `package`'s modules (as module_names gives them) that the
  file at `path` imports; a name from a subpackage that is a module of it
  counts as that module."""
  with open(path) as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      if node.module == package or node.module.startswith(f'{package}.'):
        parent = node.module[len(package) + 1 :]
        for alias in node.names:
          child = f'{parent}.{alias.name}' if parent else alias.name
          found.add(child if child in known else parent)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith(f'{package}.'):
          found.add(alias.name[len(package) + 1 :])
  return found - {''}


def import_graph(package: str) -> dict[str, set[str]]:
  names = module_names(package)
  return {
    name: imported_modules(path, package, names)
    for name, path in sorted(names.items())
  }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as a path of module names, or None."""
  visiting, done = [], set()

  def visit(node):
    if node in visiting:
      return visiting[visiting.index(node) :] + [node]
    if node in done:
      return None
    visiting.append(node)
    for child in sorted(graph.get(node, ())):
      cycle = visit(child)
      if cycle:
        return cycle
    visiting.pop()
    done.add(node)
    return None

  for node in graph:
    cycle = visit(node)
    if cycle:
      return cycle
  return None


def reachable(graph, start: str) -> set[str]:
  seen, stack = set(), [start]
  while stack:
    for child in graph.get(stack.pop(), ()):
      if child not in seen:
        seen.add(child)
        stack.append(child)
  return seen


def family(graph, name: str) -> list[str]:
  return [m for m in graph if m == name or m.startswith(f'{name}.')]


def test_find_cycle_finds_one():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [
    'a', 'b', 'c', 'a'
  ]  # fmt: skip
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_the_graph_reads_subpackages():
  graph = import_graph(PACKAGE)
  assert {'train', 'data.dataset', 'models', 'models.layers'} <= set(graph)
  assert 'models.layers' in graph['models.cnn']
  assert 'data.dataset' in graph['run']


def test_the_package_has_no_import_cycle():
  assert find_cycle(import_graph(PACKAGE)) is None


@pytest.mark.parametrize('module', ['evaluation', 'data', 'models', 'serving'])
def test_evaluation_data_models_and_serving_never_reach_a_trainer(module):
  graph = import_graph(PACKAGE)
  members = family(graph, module)
  assert members
  for member in members:
    assert not TRAINERS & reachable(graph, member), member


@pytest.mark.parametrize('module', ['evaluation', 'serving', 'inference'])
def test_inference_reaches_no_part_of_training(module):
  graph = import_graph(PACKAGE)
  members = family(graph, module)
  assert members
  for member in members:
    reached = reachable(graph, member) | graph[member]
    assert not TRAINING_PARTS & reached, (member, TRAINING_PARTS & reached)


def test_models_depend_on_nothing_of_the_project_but_errors():
  graph = import_graph(PACKAGE)
  for member in family(graph, 'models'):
    outside = {m for m in graph[member] if m.split('.')[0] != 'models'}
    assert outside <= {'errors'}, member


def test_data_knows_nothing_of_models_or_evaluation():
  graph = import_graph(PACKAGE)
  for member in family(graph, 'data'):
    reached = {m.split('.')[0] for m in reachable(graph, member)}
    assert not reached & {'models', 'evaluation'}, member


def test_the_probe_does_not_import_the_trainer():
  assert 'train' not in reachable(import_graph(PACKAGE), 'probe')


def test_no_library_module_imports_configs():
  for name, path in module_names(PACKAGE).items():
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      modules = (
        [node.module or '']
        if isinstance(node, ast.ImportFrom)
        else [a.name for a in node.names]
        if isinstance(node, ast.Import)
        else []
      )
      assert not any(m.split('.')[0] == 'configs' for m in modules), name


def test_configs_import_only_base_and_common():
  graph = import_graph('configs')
  for name, imports in graph.items():
    allowed = {'base': set(), 'common': set()}.get(name, {'base', 'common'})
    assert imports <= allowed, f'configs/{name}.py imports {imports}'
