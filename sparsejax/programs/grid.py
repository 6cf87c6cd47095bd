"""Sweeps from Python: a grid of Tasks trained one after another in one
process, each in its own workdir, skipped when finished and resumed when
interrupted; a point that fails is recorded with its error and the others go
on. Rows go to root/results.jsonl, which `report` reads. (Config files are
swept as processes by `sparsejax.sweep`.)"""

from __future__ import annotations

import pathlib
from typing import Callable, Mapping

from sparsejax.programs import results as results_lib
from sparsejax.train import loop
from sparsejax.train.task import Task


def run_grid(points: Mapping[str, Task], root, *, ids: Mapping[str, dict] | None = None,
             progress: bool = False, log: Callable[[str], None] = print) -> list[dict]:
  """Trains every named Task under root/<name>; returns the result rows.

  `ids[name]` labels a point's row (arm, seed, setting) for the report; by
  default the arm is the name and the seed the task's.
  """
  root = pathlib.Path(root).absolute()
  root.mkdir(parents=True, exist_ok=True)
  rows = []
  for i, (name, task) in enumerate(points.items()):
    labels = {'index': i, 'arm': name, 'seed': task.loop.seed, 'level': None,
              **dict((ids or {}).get(name, {}))}
    workdir = root / name
    try:
      if not (workdir / 'summary.json').exists():
        loop.train(task, workdir, progress=progress, record={'grid_point': name},
                   log=lambda text: None)
      rows.append(results_lib.run_row(workdir, **labels))
      log(f'[{i + 1}/{len(points)}] {name} done')
    except (ValueError, RuntimeError) as e:   # setup, checkpoint and non-finite errors
      rows.append(results_lib.failed_row(f'{type(e).__name__}: {e}', **labels))
      log(f'[{i + 1}/{len(points)}] {name} failed: {e}')
  results_lib.write_rows(root / 'results.jsonl', rows)
  return rows
