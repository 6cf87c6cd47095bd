"""Every experiment folder has an anchor file naming what it is compared with.

An experiment folder (a subdirectory of experiments/ holding a README.md or a
claims file) must hold anchor.md with the four sections `## Paper`, `##
Anchor`, `## Setting` and `## Differences`, each with some text under it (a
folder that reproduces no paper says so: "none: ..." and "not applicable").
Stdlib only, no JAX.
"""

from __future__ import annotations

import pathlib
import re

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / 'experiments'
HEADINGS = ('Paper', 'Anchor', 'Setting', 'Differences')
CLAIMS = ('claims.csv', 'claims.md')
_HEADING = re.compile(r'^## +(.+?)\s*$')


def experiment_folders(root: pathlib.Path = EXPERIMENTS) -> list[pathlib.Path]:
  """Subdirectories of `root` that hold a README.md or a claims file."""
  return sorted(p for p in root.iterdir()
                if p.is_dir() and any((p / n).is_file() for n in ('README.md', *CLAIMS)))


def sections(text: str) -> dict[str, list[str]]:
  """{'## ' heading: [the lines of each section so named]}; fenced code skipped."""
  out: dict[str, list[str]] = {}
  current, fenced = None, False
  for line in text.splitlines():
    if line.lstrip().startswith('```'):
      fenced = not fenced
    match = None if fenced else _HEADING.match(line)
    if match:
      current = match.group(1)
      out.setdefault(current, []).append('')
    elif current is not None:
      out[current][-1] += line + '\n'
  return out


def check_anchor(folder: pathlib.Path) -> list[str]:
  """What is wrong with folder/anchor.md; [] when it has every section, once, non-empty."""
  path = pathlib.Path(folder) / 'anchor.md'
  if not path.is_file():
    return [f'{path}: missing']
  found = sections(path.read_text(encoding='utf-8'))
  problems = []
  for name in HEADINGS:
    bodies = found.get(name, [])
    if not bodies:
      problems.append(f'{path}: no "## {name}" section')
    elif len(bodies) > 1:
      problems.append(f'{path}: "## {name}" appears {len(bodies)} times')
    elif not bodies[0].strip():
      problems.append(f'{path}: "## {name}" is empty')
  return problems


def test_there_are_experiment_folders():
  names = {p.name for p in experiment_folders()}
  assert {'rigl_lenet_mnist', 'smollm2_sft', 'sweep_resume_demo'} <= names
  assert '__pycache__' not in names


@pytest.mark.parametrize('folder', experiment_folders(), ids=lambda p: p.name)
def test_anchor_file(folder):
  assert check_anchor(folder) == []


_GOOD = """# Anchor: made up

## Paper

A. Author, "A Title", Venue 2020, arXiv 0000.00000.

## Anchor

Table 1, row X: "1.23".

## Setting

| | paper | ours | same? |
|---|---|---|---|
| optimizer | SGD | SGD | yes |

## Differences

setting identical
"""


def test_checker_accepts_a_complete_anchor(tmp_path):
  (tmp_path / 'anchor.md').write_text(_GOOD)
  assert check_anchor(tmp_path) == []


def test_checker_rejects_a_missing_heading(tmp_path):
  (tmp_path / 'anchor.md').write_text(_GOOD.replace('## Differences\n', 'Differences\n'))
  problems = check_anchor(tmp_path)
  assert len(problems) == 1 and '"## Differences" section' in problems[0]


def test_checker_rejects_an_empty_section_a_duplicate_and_a_missing_file(tmp_path):
  (tmp_path / 'anchor.md').write_text(
      _GOOD.replace('Table 1, row X: "1.23".\n', '') + '\n## Paper\n\nagain\n')
  problems = check_anchor(tmp_path)
  assert any('"## Anchor" is empty' in p for p in problems)
  assert any('"## Paper" appears 2 times' in p for p in problems)
  (tmp_path / 'anchor.md').unlink()
  assert check_anchor(tmp_path) == [f'{tmp_path / "anchor.md"}: missing']


def test_a_heading_inside_a_code_block_does_not_count(tmp_path):
  text = _GOOD.replace('## Setting\n', '```\n## Setting\n```\n')
  (tmp_path / 'anchor.md').write_text(text)
  assert any('no "## Setting" section' in p for p in check_anchor(tmp_path))
