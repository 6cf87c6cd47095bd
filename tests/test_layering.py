"""Imports point down, and only where the layers say.

Every module of the package has a place in LAYERS: a layer (a number) and a
group (a name). A module may import a module of its own group or of a lower
layer; never one above it, and never one of another group on its own layer
(peers: `data`, `models` and `posttrain` do not import each other; neither do
`core`, `bundled`, `optim` and `io`). A module that LAYERS does not place fails
the test (there is no catch-all), and so does a LAYERS entry that places nothing.

 -1  base: core.imports (the one name resolver; imports nothing from sparsejax)
  0  core (and the package's __init__, which re-exports it) | bundled | optim | io
  1  data | models | posttrain
  2  train
  3  programs
  4  config: settings, config_pruning, config_blocks, config_schema, config
  5  experiment, build
  6  prune_run
  7  entry points: sweep, reproduce, cli

Two rules on top of the layers:
- Only CONFIG_READERS import the config layer (`sparsejax.config`,
  `sparsejax.config_blocks`, `sparsejax.config_schema`,
  `sparsejax.config_pruning`, `sparsejax.settings`); everything else takes
  objects and settings as arguments.
- CEILINGS: `sparsejax.settings` is plain data that the library receives as
  arguments, so it imports nothing above layer 0.

What counts as an import: `import sparsejax.x`, `from sparsejax.x import y`
(y itself when it is a module), relative imports (`from . import x`,
`from ..data import base`, resolved against the importing module's package),
lazy imports inside functions, and string literals that are whole import
paths, `'sparsejax.models.mlp:MLP'` or `'sparsejax.cli'` (registries, config
defaults, `python -m` commands), resolved to the longest module they name.
String references count for the layers but not for import cycles: nothing
imports them at import time.

KNOWN_VIOLATIONS lists the imports in the code today that break a rule, each
with its reason; the test fails on any other violation, and also when a
listed one is gone, so the list only shrinks.
"""

from __future__ import annotations

import ast
import pathlib
import re
import textwrap

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'sparsejax'
ROOT = 'sparsejax'

# name -> (layer, group). 'pkg.*' places pkg and every module below it; any
# other entry places exactly that module.
LAYERS: dict[str, tuple[int, str]] = {
    'sparsejax': (0, 'core'),             # the __init__ re-exports the core's names
    'sparsejax.core.*': (0, 'core'),
    # resolve(name, table, kind): every registry's lookup, optim's included
    'sparsejax.core.imports': (-1, 'base'),
    'sparsejax.bundled': (0, 'bundled'),  # where configs/ and experiments/ are
    'sparsejax.optim': (0, 'optim'),      # optax, and the name resolver
    # files in and out (weights formats, tokenizer files, the model wheels):
    # what data and models share, so that neither imports the other
    'sparsejax.io.*': (0, 'io'),
    'sparsejax.data.*': (1, 'data'),
    'sparsejax.models.*': (1, 'models'),
    'sparsejax.posttrain.*': (1, 'posttrain'),   # the core's masks on any model's params
    'sparsejax.train.*': (2, 'train'),
    'sparsejax.programs.*': (3, 'programs'),
    'sparsejax.settings': (4, 'config'),
    'sparsejax.config_blocks': (4, 'config'),
    'sparsejax.config_pruning': (4, 'config'),
    'sparsejax.config': (4, 'config'),
    'sparsejax.config_schema': (4, 'config'),
    'sparsejax.build': (5, 'experiment'),
    'sparsejax.experiment': (5, 'experiment'),
    'sparsejax.prune_run': (6, 'prune_run'),   # builds on experiment's task
    # sweep runs each point as a `python -m sparsejax.cli` process: it is the
    # CLI's peer, not below it (the CLI imports sweep in process, not back).
    'sparsejax.sweep': (7, 'entry'),
    'sparsejax.reproduce': (7, 'entry'),
    'sparsejax.cli': (7, 'entry'),
    'sparsejax.cli_args': (7, 'entry'),   # the CLI's parser; the handlers pass themselves in
}

CONFIG = frozenset({'sparsejax.config', 'sparsejax.config_blocks', 'sparsejax.config_schema',
                    'sparsejax.config_pruning', 'sparsejax.settings'})
# Who may import the config layer, and why:
CONFIG_READERS = frozenset(CONFIG | {
    'sparsejax.experiment',   # turns a config into Settings once, and runs programs
    'sparsejax.build',        # builds objects from Settings: the bridge into the library
    'sparsejax.prune_run',    # `sparsejax prune`: to_settings of a config and of a recorded one
    'sparsejax.sweep',        # loads a sweep config and checks every point's settings
    'sparsejax.reproduce',    # loads the configs of an experiment's sweeps
    'sparsejax.cli',          # reads --config and its overrides
})

# module -> the highest layer it may import.
CEILINGS = {'sparsejax.settings': 0}

# (importer, imported) -> why it is still there. Remove an entry when its
# import goes; add one only with a reason.
KNOWN_VIOLATIONS = {
}

IMPORT_PATH = re.compile(r'sparsejax(\.\w+)+(:\w+)?')


# --- the checker ---------------------------------------------------------------------

def module_name(path: pathlib.Path, package: pathlib.Path) -> str:
  parts = path.relative_to(package.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def sources(package: pathlib.Path = PACKAGE) -> dict[str, tuple[str, bool]]:
  """{module name: (source, is a package's __init__)} of every .py file. A
  wheel's sparsejax/bundled/{configs,experiments} are shipped files, not
  modules of the package."""
  out = {}
  for p in sorted(package.rglob('*.py')):
    rel = p.relative_to(package).parts
    if rel[0] == 'bundled' and len(rel) > 2:
      continue
    out[module_name(p, package)] = (p.read_text(), p.name == '__init__.py')
  return out


def longest_module(name: str, modules) -> str | None:
  """The longest dotted prefix of name that is a module, or None."""
  parts = name.split('.')
  for n in range(len(parts), 0, -1):
    if '.'.join(parts[:n]) in modules:
      return '.'.join(parts[:n])
  return None


def imports_of(mod: str, source: str, is_package: bool, modules) -> dict[str, str]:
  """{imported sparsejax module: 'import' | 'string'} of one module's source."""
  out: dict[str, str] = {}

  def add(name, kind):
    if name and name != mod and (kind == 'import' or name not in out):
      out[name] = kind

  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.split('.')[0] == ROOT:
          add(longest_module(a.name, modules) or a.name, 'import')
    elif isinstance(node, ast.ImportFrom):
      if node.level:    # relative: against the package of the importing module
        package = mod.split('.') if is_package else mod.split('.')[:-1]
        if node.level - 1 > len(package) - 1:
          raise AssertionError(f'{mod}: relative import beyond the top-level package')
        package = package[:len(package) - (node.level - 1)]
        base = '.'.join(package + ([node.module] if node.module else []))
      else:
        base = node.module or ''
      if base.split('.')[0] != ROOT:
        continue
      for a in node.names:   # 'from x import y' imports module x.y where there is one
        sub = f'{base}.{a.name}'
        add(sub if sub in modules else longest_module(base, modules) or base, 'import')
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
      if IMPORT_PATH.fullmatch(node.value):
        add(longest_module(node.value.split(':')[0], modules), 'string')
  return out


def graph(package: pathlib.Path = PACKAGE) -> dict[str, dict[str, str]]:
  """{module: {imported module: 'import' | 'string'}} of the package."""
  src = sources(package)
  return {m: imports_of(m, s, is_pkg, src) for m, (s, is_pkg) in src.items()}


def place(name: str, layers=LAYERS) -> tuple[int, str] | None:
  """(layer, group) of a module, or None when LAYERS does not place it."""
  if name in layers:
    return layers[name]
  best = None
  for key, value in layers.items():
    if key.endswith('.*'):
      pkg = key[:-2]
      if (name == pkg or name.startswith(pkg + '.')) and (best is None or len(pkg) > len(best[0])):
        best = (pkg, value)
  return best and best[1]


def unplaced(g, layers=LAYERS) -> list[str]:
  """Modules LAYERS does not place, and LAYERS entries that place no module."""
  out = [f'module {m} has no layer: add it to LAYERS'
         for m in sorted(g) if place(m, layers) is None]
  for key in layers:
    pkg = key.removesuffix('.*')
    if pkg not in g:
      out.append(f'LAYERS entry {key!r}: there is no module {pkg}')
  return out


def violations(g, layers=LAYERS, readers=CONFIG_READERS, ceilings=CEILINGS,
               config=CONFIG) -> dict[tuple[str, str], str]:
  """{(importer, imported): the rule it breaks} over the graph."""
  bad = {}
  for mod, deps in g.items():
    here = place(mod, layers)
    for dep, kind in deps.items():
      there = place(dep, layers)
      if here is None or there is None:
        continue       # unplaced() reports these
      how = 'names' if kind == 'string' else 'imports'
      why = []
      if there[0] > here[0]:
        why.append(f'layer {here[0]} {how} layer {there[0]}')
      elif there[0] == here[0] and there[1] != here[1]:
        why.append(f'peers: {here[1]} {how} {there[1]}')
      if dep in config and mod not in readers:
        why.append(f'{mod} is not a config reader')
      if mod in ceilings and there[0] > ceilings[mod]:
        why.append(f'{mod} may import layers <= {ceilings[mod]} only')
      if why:
        bad[mod, dep] = f'{mod} {how} {dep}: ' + '; '.join(why)
  return bad


def cycles(g) -> list[str]:
  """Circles of imports (string references left out), the package root aside."""
  edges = {m: {d for d, kind in deps.items() if kind == 'import' and d in g and d != ROOT}
           for m, deps in g.items() if m != ROOT}
  state, found = {}, []

  def visit(node, stack):
    state[node] = 'open'
    for dep in sorted(edges.get(node, ())):
      if state.get(dep) == 'open':
        found.append(' -> '.join(stack[stack.index(dep):] + [dep]))
      elif dep not in state:
        visit(dep, stack + [dep])
    state[node] = 'done'

  for node in sorted(edges):
    if node not in state:
      visit(node, [node])
  return found


# --- the package ---------------------------------------------------------------------

def test_every_module_has_a_layer():
  problems = unplaced(graph())
  assert not problems, '\n'.join(problems)


def test_imports_follow_the_layers():
  bad = violations(graph())
  new = {edge: why for edge, why in bad.items() if edge not in KNOWN_VIOLATIONS}
  gone = set(KNOWN_VIOLATIONS) - set(bad)
  assert not new, 'imports that break the layering:\n' + '\n'.join(sorted(new.values()))
  assert not gone, ('fixed, so remove from KNOWN_VIOLATIONS: '
                    + ', '.join(f'{a} -> {b}' for a, b in sorted(gone)))


def test_no_import_cycles():
  found = cycles(graph())
  assert not found, '\n'.join(found)


def test_the_scan_sees_every_kind_of_reference_in_the_package():
  g = graph()
  assert g['sparsejax.sweep']['sparsejax.cli'] == 'string'       # '-m', 'sparsejax.cli'
  assert g['sparsejax.experiment']['sparsejax.programs.peft'] == 'import'   # a lazy import
  assert g['sparsejax.cli']['sparsejax.config'] == 'import'
  assert 'sparsejax.programs' not in g['sparsejax.data.corpus']   # prose in a docstring


# --- the checker on synthetic packages ---------------------------------------------------

def write_package(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  """A package named sparsejax under tmp_path: every folder gets an __init__.py."""
  package = tmp_path / ROOT
  for rel, text in files.items():
    path = package / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
  for folder in [package, *(p for p in package.rglob('*') if p.is_dir())]:
    (folder / '__init__.py').touch()     # leaves a written __init__.py as it is
  return package


BASE = {'core/masks.py': '', 'train/loop.py': '', 'data/base.py': '', 'models/mlp.py': '',
        'programs/report.py': '', 'config.py': '', 'settings.py': '', 'cli.py': ''}


def synthetic(tmp_path, files):
  g = graph(write_package(tmp_path, {**BASE, **files}))
  return g, violations(g)


def test_the_checker_reports_an_upward_import(tmp_path):
  g, bad = synthetic(tmp_path, {'core/masks.py': 'def f():\n  from sparsejax.train import loop\n'})
  assert g['sparsejax.core.masks'] == {'sparsejax.train.loop': 'import'}
  assert bad == {('sparsejax.core.masks', 'sparsejax.train.loop'):
                 'sparsejax.core.masks imports sparsejax.train.loop: layer 0 imports layer 2'}


def test_the_checker_reports_peers_importing_each_other(tmp_path):
  g, bad = synthetic(tmp_path, {'models/mlp.py': 'from sparsejax.data.base import Dataset\n',
                                'data/base.py': 'import sparsejax.models.mlp\n'})
  assert set(bad) == {('sparsejax.models.mlp', 'sparsejax.data.base'),
                      ('sparsejax.data.base', 'sparsejax.models.mlp')}
  assert 'peers: models imports data' in bad['sparsejax.models.mlp', 'sparsejax.data.base']


def test_the_checker_resolves_relative_imports(tmp_path):
  g, bad = synthetic(tmp_path, {
      'models/__init__.py': 'from . import mlp\nfrom .mlp import MLP\n',
      'models/mlp.py': 'from ..data import base\nfrom ..core.masks import apply\n',
      'train/loop.py': 'from .. import programs\nfrom . import step\n',
      'train/step.py': ''})
  assert g['sparsejax.models'] == {'sparsejax.models.mlp': 'import'}
  assert g['sparsejax.models.mlp'] == {'sparsejax.data.base': 'import',
                                       'sparsejax.core.masks': 'import'}
  assert g['sparsejax.train.loop'] == {'sparsejax.programs': 'import',
                                       'sparsejax.train.step': 'import'}
  assert set(bad) == {('sparsejax.models.mlp', 'sparsejax.data.base'),
                      ('sparsejax.train.loop', 'sparsejax.programs')}


def test_the_checker_counts_import_path_strings(tmp_path):
  g, bad = synthetic(tmp_path, {'models/mlp.py': '''
      """Trained by sparsejax.train.loop (prose, not a reference)."""
      DEFAULT = {'loss': 'sparsejax.train.loop:cross_entropy'}
      '''})
  assert g['sparsejax.models.mlp'] == {'sparsejax.train.loop': 'string'}
  assert bad == {('sparsejax.models.mlp', 'sparsejax.train.loop'):
                 'sparsejax.models.mlp names sparsejax.train.loop: layer 1 names layer 2'}


def test_the_checker_reports_an_unlisted_module(tmp_path):
  package = write_package(tmp_path, {**BASE, 'newthing.py': '', 'posttrain/wanda.py': ''})
  layers = {k: v for k, v in LAYERS.items() if k != 'sparsejax.posttrain.*'}
  problems = unplaced(graph(package), layers)
  assert 'module sparsejax.newthing has no layer: add it to LAYERS' in problems
  assert 'module sparsejax.posttrain.wanda has no layer: add it to LAYERS' in problems
  assert place('sparsejax.newthing') is None and place('sparsejax.configs') is None
  assert place('sparsejax.posttrain.wanda') == (1, 'posttrain')


def test_the_checker_keeps_the_config_to_its_readers(tmp_path):
  layers = {**LAYERS, 'sparsejax.tool': (7, 'entry')}    # high enough, but no reader
  package = write_package(tmp_path, {**BASE, 'tool.py': 'from sparsejax import config\n',
                                     'settings.py': 'from sparsejax.programs import report\n',
                                     'cli.py': 'from sparsejax import config, settings\n'})
  bad = violations(graph(package), layers)
  assert set(bad) == {('sparsejax.tool', 'sparsejax.config'),
                      ('sparsejax.settings', 'sparsejax.programs.report')}
  assert 'not a config reader' in bad['sparsejax.tool', 'sparsejax.config']
  assert 'layers <= 0 only' in bad['sparsejax.settings', 'sparsejax.programs.report']


def test_the_checker_finds_a_cycle(tmp_path):
  package = write_package(tmp_path, {**BASE, 'core/a.py': 'from . import b\n',
                                     'core/b.py': 'from sparsejax.core import a\n',
                                     'cli.py': 'from sparsejax.programs import report\n',
                                     'programs/report.py': 'CLI = "sparsejax.cli"\n'})
  g = graph(package)
  assert g['sparsejax.programs.report'] == {'sparsejax.cli': 'string'}
  assert cycles(g) == ['sparsejax.core.a -> sparsejax.core.b -> sparsejax.core.a']
