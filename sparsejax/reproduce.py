"""`sparsejax reproduce NAME`: one experiment folder end to end.

An experiment folder under experiments/ that holds a `reproduce.py` names
its sweep config (`SWEEP`, a file in the folder) and states its claims: a
function `claims(rows) -> list[Claim]` over the sweep's result rows, each
claim the paper's number, ours, the tolerance and whether ours lands within
it. The command runs the sweep (finished points are skipped, interrupted ones
resumed), writes the report (report.md, report.csv, plots) and claims.csv
into the work directory and prints the paper-against-ours table.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import pathlib
from typing import Callable

from sparsejax import sweep
from sparsejax.config import ConfigError
from sparsejax.programs import report as report_lib

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / 'experiments'


@dataclasses.dataclass(frozen=True)
class Claim:
  """One number of the paper against ours."""
  claim: str
  paper: str
  ours: str
  tolerance: str
  passed: bool | None      # None: reported beside, no target

  @property
  def verdict(self) -> str:
    return {True: 'pass', False: 'miss', None: '-'}[self.passed]


def experiment_dir(name: str) -> pathlib.Path:
  folder = pathlib.Path(name)
  if not (folder / 'reproduce.py').is_file():
    folder = EXPERIMENTS / name
  if not (folder / 'reproduce.py').is_file():
    known = sorted(p.parent.name for p in EXPERIMENTS.glob('*/reproduce.py'))
    raise ConfigError(f'no reproducible experiment {name!r}; known: {known}')
  return folder


def _module(folder: pathlib.Path):
  spec = importlib.util.spec_from_file_location(f'_sparsejax_reproduce_{folder.name}',
                                                folder / 'reproduce.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for attr in ('SWEEP', 'claims'):
    if not hasattr(module, attr):
      raise ConfigError(f'{folder / "reproduce.py"} has no {attr}')
  return module


def reproduce(name: str, workdir, *, jobs: int = 1, collect: bool = False,
              log: Callable[[str], None] = print) -> list[Claim]:
  """Runs (or, with `collect`, only gathers) the experiment; returns its claims."""
  folder = experiment_dir(name)
  module = _module(folder)
  config_path = folder / module.SWEEP
  root = pathlib.Path(workdir).absolute()
  if collect:
    points, _ = sweep.load_sweep(config_path)
    rows = sweep.collect(root, points)
  else:
    rows = sweep.run_sweep(config_path, root, jobs=jobs, log=log)
  log(report_lib.report(root, metric=getattr(module, 'METRIC', 'test_accuracy')))
  claims = list(module.claims([r for r in rows if r.get('status') == 'ok']))
  with open(root / 'claims.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['claim', 'paper', 'ours', 'tolerance', 'verdict'])
    for c in claims:
      writer.writerow([c.claim, c.paper, c.ours, c.tolerance, c.verdict])
  log(claims_table(claims))
  return claims


def claims_table(claims: list[Claim]) -> str:
  lines = ['| claim | paper | ours | tolerance | verdict |', '|---|---|---|---|---|']
  lines += [f'| {c.claim} | {c.paper} | {c.ours} | {c.tolerance} | {c.verdict} |'
            for c in claims]
  return '\n'.join(lines)
