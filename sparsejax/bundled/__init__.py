"""Where the shipped `configs/` and reproducible `experiments/` live.

In a source checkout they are the repository's top-level folders. A wheel
(`pip install sparsejax`, not editable) carries the same files inside this
package, `sparsejax/bundled/configs/*.py` and
`sparsejax/bundled/experiments/<name>/` (pyproject.toml maps the top-level
folders in), with the same relative layout, so an experiment config's
`Path(__file__).parents[2] / 'configs'` finds the base configs in both.
"""

from __future__ import annotations

import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
_CHECKOUT = _HERE.parents[1]
FOLDERS = ('configs', 'experiments')


def root() -> pathlib.Path:
  """The folder that holds `configs/` and `experiments/`: this package in an
  installed wheel, the repository root in a checkout (or an editable install)."""
  return _HERE if (_HERE / 'configs').is_dir() else _CHECKOUT


def folder(name: str) -> pathlib.Path:
  """root() / name, name one of FOLDERS."""
  if name not in FOLDERS:
    raise ValueError(f'no bundled folder {name!r}; one of {FOLDERS}')
  return root() / name


def config_names() -> list[str]:
  """The shipped base configs by name ('lenet300_100_mnist', ...)."""
  return sorted(p.stem for p in folder('configs').glob('*.py') if not p.stem.startswith('_'))


def find(text: str) -> pathlib.Path | None:
  """The file a command-line path or name stands for, or None.

  A path that exists as given wins. Else a relative path that starts with
  `configs/` or `experiments/` is looked up under root(), so the README's
  commands work from any directory after a plain install; a bare name
  ('lenet300_100_mnist', with or without '.py') is a shipped base config."""
  path = pathlib.Path(text)
  if path.is_file():
    return path
  if path.is_absolute():
    return None
  if path.parts and path.parts[0] in FOLDERS:
    candidate = root() / path
    return candidate if candidate.is_file() else None
  if len(path.parts) == 1:
    candidate = folder('configs') / (text if text.endswith('.py') else f'{text}.py')
    return candidate if candidate.is_file() else None
  return None
