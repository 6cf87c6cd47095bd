"""`sparsejax reproduce NAME`: one experiment folder end to end.

An experiment folder under experiments/ that holds a `reproduce.py` names
what it runs, a sweep config (`SWEEP`, a file in the folder) or lottery
configs (`LOTTERY`, a list of 'file.py' or 'file.py:arg' in the folder, each
one lottery program, e.g. one per seed), and states its claims: a function
`claims(rows) -> list[Claim]` over the result rows, each claim the paper's
number, ours, the tolerance and whether ours lands within it. The command
runs everything (finished runs are skipped, interrupted ones resumed),
writes the report (report.md, report.csv, plots), results.csv (every run)
and claims.csv into the work directory and prints the paper-against-ours table.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import pathlib
from typing import Callable

from sparsejax import bundled, sweep
from sparsejax.config import ConfigError
from sparsejax.programs import report as report_lib

EXPERIMENTS = bundled.folder('experiments')   # the checkout's, or the installed copy


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
  if not hasattr(module, 'claims') or hasattr(module, 'SWEEP') == hasattr(module, 'LOTTERY'):
    raise ConfigError(f'{folder / "reproduce.py"} needs claims(rows) and one of SWEEP '
                      'or LOTTERY')
  return module


def _lotteries(folder: pathlib.Path, module, root: pathlib.Path, collect: bool, log):
  """Runs (or with `collect` only reads) each of the module's LOTTERY configs
  under `root`; returns their rows and their run folders."""
  from sparsejax import config as config_lib, experiment
  from sparsejax.programs import tables
  rows, dirs = [], []
  for spec in module.LOTTERY:
    config = config_lib.load_config(f'{folder / spec}')
    run_dir = experiment.lottery_dir(config, root)
    dirs.append(run_dir)
    if collect:
      if not (run_dir / 'results.jsonl').exists():
        raise ConfigError(f'{spec}: no results in {run_dir} yet; run without --collect')
      found = tables.load_results([run_dir])
    else:
      found = experiment.run_lottery(config, root, log=log)
    rows += [{**r, 'config': spec} for r in found]     # which LOTTERY entry made it
  return rows, dirs


def reproduce(name: str, workdir, *, jobs: int = 1, collect: bool = False,
              log: Callable[[str], None] = print) -> list[Claim]:
  """Runs (or, with `collect`, only gathers) the experiment; returns its claims."""
  folder = experiment_dir(name)
  module = _module(folder)
  root = pathlib.Path(workdir).absolute()
  metric = getattr(module, 'METRIC', 'test_accuracy')
  if hasattr(module, 'LOTTERY'):
    rows, dirs = _lotteries(folder, module, root, collect, log)
    for run_dir in dirs:
      log(report_lib.report(run_dir, metric=metric))
  else:
    config_path = folder / module.SWEEP
    if collect:
      points, _ = sweep.load_sweep(config_path)
      rows = sweep.collect(root, points)
    else:
      rows = sweep.run_sweep(config_path, root, jobs=jobs, log=log)
    log(report_lib.report(root, metric=metric))
  ok = [r for r in rows if r.get('status') == 'ok']
  write_results_csv(root / 'results.csv', ok)
  claims = list(module.claims(ok))
  with open(root / 'claims.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['claim', 'paper', 'ours', 'tolerance', 'verdict'])
    for c in claims:
      writer.writerow([c.claim, c.paper, c.ours, c.tolerance, c.verdict])
  log(claims_table(claims))
  return claims


def flat_row(row: dict) -> dict:
  """One finished run as CSV columns: its ids and settings, density, the
  final metrics, the early-stopping step and metrics, and per-layer density."""
  out = {k: row.get(k) for k in ('config', 'arm', 'seed', 'replicate', 'level')
         if row.get(k) is not None}
  out.update({f'setting.{k}': v for k, v in sorted(row.get('setting', {}).items())})
  out['density'] = row['density']
  out.update({f'final.{k}': v for k, v in sorted(row['final'].items())})
  for k, v in sorted((row.get('early_stop') or {}).items()):
    out[f'early_stop.{k}'] = v
  out.update({f'layer_density.{k}': v for k, v in sorted(row.get('layer_density', {}).items())})
  return out


def write_results_csv(path, rows: list[dict]) -> None:
  """Every finished run, one line each (the numbers a README may quote)."""
  flat = [flat_row(r) for r in rows]
  columns = list(dict.fromkeys(k for f in flat for k in f))
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(flat)


def claims_table(claims: list[Claim]) -> str:
  lines = ['| claim | paper | ours | tolerance | verdict |', '|---|---|---|---|---|']
  lines += [f'| {c.claim} | {c.paper} | {c.ours} | {c.tolerance} | {c.verdict} |'
            for c in claims]
  return '\n'.join(lines)
