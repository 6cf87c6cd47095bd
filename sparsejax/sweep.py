"""Sweeps of configs: every point of a config's `get_sweep()` as its own
process. (From Python, `programs.grid.run_grid` sweeps Task objects in one
process.)

A config file that defines `get_sweep()` (a function yielding override
dicts, as in flax and big_vision configs) is a sweep. Keys starting with '_'
are labels, not overrides: '_arm' names the method in tables and plots,
'_name' (optional, unique) names the point's directory. In string values,
'{workdir}' stands for the sweep's directory, so a sweep can start from the
runs of another (finetune.init_from='{workdir}/../dense/seed_0').
A module-level `PROGRAM` says what each point runs: 'train' (default) or
'finetune'. Each point runs as `sparsejax PROGRAM --config FILE --workdir
DIR/<name> --config.KEY=VALUE ...`, N at a time; its directory is named by
the arm and a hash of its overrides, so re-running the sweep skips finished
points (their summary.json exists), resumes interrupted ones exactly, and a
point that fails is recorded with its error while the others go on.

On a cluster, run one process per point: `--count` says how many points
there are, `--list` which index is which, and `--index I` (by default
$SLURM_ARRAY_TASK_ID, so a SLURM job array task needs no argument) runs
point I alone. Points are numbered in `get_sweep()`'s order, so it must
yield them in the same order every time. Each process collects the sweep's
results.jsonl under a lock when its point ends, so after the last task
`sparsejax report DIR` reads every point; `sparsejax sweep ... --collect`
gathers them again from the run directories (scripts/slurm_sweep.sbatch
does both). `sweep_command` is `sparsejax sweep`; `programs.sweep_points`
names the points' directories and collects their rows.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
import uuid
from typing import Callable, Mapping

from sparsejax import config as config_lib
from sparsejax.programs import report as report_lib
# Re-exported: a point's directory, its status and the collected rows are
# read in programs.sweep_points.
from sparsejax.programs.sweep_points import (collect, last_error_line, overrides,  # noqa: F401
                                             point_name, point_status)

PROGRAMS = ('train', 'finetune')
ARRAY_TASK_ENV = 'SLURM_ARRAY_TASK_ID'   # the default of --index: a job array task's number


def load_sweep(path) -> tuple[list[dict], str]:
  """(points, program) of a sweep config file."""
  path, _ = config_lib.config_file(path)    # a path, or one shipped with the package
  config_lib.load_config(path)   # the base config must be valid on its own
  spec = importlib.util.spec_from_file_location(f'_sparsejax_sweep_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise config_lib.ConfigError(f'{path} has no get_sweep(): not a sweep config')
  program = getattr(module, 'PROGRAM', 'train')
  if program not in PROGRAMS:
    raise config_lib.ConfigError(f'{path}: PROGRAM must be one of {PROGRAMS}, got {program!r}')
  points = [dict(p) for p in module.get_sweep()]
  names = [point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError(f'{path}: two sweep points share a name or the same overrides')
  base = config_lib.load_config(path)
  for i, p in enumerate(points):   # every point's overrides must be valid: fail early
    try:
      config_lib.to_settings(config_lib.apply_overrides(base, {
          k: v.replace('{workdir}', '.') if isinstance(v, str) else v
          for k, v in overrides(p).items()}))
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f'sweep point {i} {p}: {e}') from None
  return points, program


def override_args(point: dict, root='') -> list[str]:
  """The point's overrides as `--config.KEY=VALUE` arguments, '{workdir}' in
  string values replaced by `root`."""
  args = []
  for k, v in overrides(point).items():
    if isinstance(v, str):
      args.append(f'--config.{k}={v.replace("{workdir}", str(root))}')
    else:
      args.append(f'--config.{k}={v!r}')
  return args


def command(program: str, config_path, workdir, point: dict, root='') -> list[str]:
  return [sys.executable, '-m', 'sparsejax.cli', program, '--config', str(config_path),
          '--workdir', str(workdir), '--no-progress', *override_args(point, root)]


def point_index(given, count: int, environ: Mapping[str, str] | None = None) -> int | None:
  """The one point to run: `given` (--index) if not None, else
  $SLURM_ARRAY_TASK_ID when `environ` sets it (a task of a job array), else
  None (every point). A value that is not an integer in [0, count) raises
  ConfigError naming where it came from and the valid range: a job array
  sized from a stale count must fail loudly, not run some other point."""
  environ = {} if environ is None else environ
  if given is not None:
    source, text = '--index', str(given)
  elif environ.get(ARRAY_TASK_ENV, '').strip():
    source, text = ARRAY_TASK_ENV, environ[ARRAY_TASK_ENV]
  else:
    return None
  valid = (f'the sweep has {count} points, valid indices 0-{count - 1}' if count
           else 'the sweep has no points')
  try:
    index = int(text.strip())
  except ValueError:
    raise config_lib.ConfigError(f'{source}={text!r} is not an integer; {valid}') from None
  if not 0 <= index < count:
    raise config_lib.ConfigError(f'{source}={index} is out of range; {valid}')
  return index


def list_lines(root, points: list[dict]) -> list[str]:
  """One line per point, tab-separated: index, status, run directory name and
  the overrides it runs with, to size a job array and to see which tasks to
  submit again."""
  root = pathlib.Path(root).absolute()
  return ['\t'.join((str(i), point_status(root, p), point_name(p),
                     shlex.join(override_args(p, root)))) for i, p in enumerate(points)]


def _env(config_path) -> dict:
  """The points' environment: this checkout, the config's folder and the working
  directory importable, so import paths in the config ('pkg.module:Net') resolve."""
  env = dict(os.environ)
  paths = (str(pathlib.Path(__file__).resolve().parents[1]),
           str(pathlib.Path(config_path).resolve().parent), os.getcwd(),
           env.get('PYTHONPATH', ''))
  env['PYTHONPATH'] = os.pathsep.join(p for p in paths if p)
  return env


def run_point(program, config_path, root: pathlib.Path, point: dict) -> tuple[str, float]:
  """Runs one point unless finished; ('done' | 'skipped' | 'failed', seconds)."""
  workdir = root / point_name(point)
  if (workdir / 'summary.json').exists():
    return 'skipped', 0.0
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'point.json').write_text(json.dumps(point, default=str) + '\n')
  t0 = time.perf_counter()
  proc = subprocess.run(command(program, config_path, workdir, point, root),
                        env=_env(config_path),
                        capture_output=True, text=True)
  (workdir / 'stdout.txt').write_text(proc.stdout)
  error_file = workdir / 'error.txt'
  if proc.returncode != 0:
    error_file.write_text(f'exit status {proc.returncode}\n{proc.stderr[-20000:]}')
    return 'failed', time.perf_counter() - t0
  if error_file.exists():
    error_file.unlink()
  return 'done', time.perf_counter() - t0


def _write_atomic(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file of its own (a random
  name: pids repeat across a cluster's nodes), since the tasks of a job array
  write the same files at once."""
  tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex}.tmp')
  tmp.write_text(text)
  tmp.replace(path)


def run_sweep(config_path, workdir, *, jobs: int = 1, index: int | str | None = None,
              environ: Mapping[str, str] | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
  """Runs the sweep (or one point of it) and returns the collected rows.

  `index` runs that point alone; so does $SLURM_ARRAY_TASK_ID when `index`
  is None and `environ` (the command line passes os.environ) sets it."""
  config_path, _ = config_lib.config_file(config_path)
  points, program = load_sweep(config_path)
  index = point_index(index, len(points), environ)
  root = pathlib.Path(workdir).absolute()
  root.mkdir(parents=True, exist_ok=True)
  _write_atomic(root / 'sweep.json', json.dumps(
      {'config': str(pathlib.Path(config_path).absolute()), 'program': program,
       'points': points}, indent=1, default=str) + '\n')
  todo = list(enumerate(points)) if index is None else [(index, points[index])]
  log(f'sweep {config_path}: {len(points)} points, {program}, {jobs} at a time, in {root}')
  done = 0
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    futures = {pool.submit(run_point, program, config_path, root, p): (i, p) for i, p in todo}
    for future in concurrent.futures.as_completed(futures):
      i, p = futures[future]
      status, secs = future.result()
      done += 1
      extra = ''
      if status == 'failed':
        extra = ': ' + last_error_line((root / point_name(p) / 'error.txt').read_text())
      log(f'[{done}/{len(todo)}] point {i} {point_name(p)} {status} ({secs:.0f} s){extra}')
  return collect(root, points)


def sweep_command(config_path, workdir, *, jobs: int = 1, index=None, count: bool = False,
                  list_points: bool = False, collect_only: bool = False,
                  metric: str = 'test_accuracy', environ: Mapping[str, str] | None = None,
                  log: Callable[[str], None] = print) -> int:
  """`sparsejax sweep`: runs the sweep, or one point of it (`index`, or a job
  array task's $SLURM_ARRAY_TASK_ID in `environ`), or only reads it
  (`count`, `list_points`, `collect_only`: runs no point), and logs the
  report. Exit status 1 when a point that was to run failed: any of the whole
  sweep's, or the one point's, so that the array task shows as failed."""
  root = pathlib.Path(workdir).absolute()
  if not (count or list_points or collect_only):
    rows = run_sweep(config_path, workdir, jobs=jobs, index=index, environ=environ, log=log)
    one = point_index(index, len(rows), environ)   # already checked
    if one is not None:
      return 1 if rows[one].get('status') == 'failed' else 0
  elif index is not None:
    raise config_lib.ConfigError('--index runs one point; --count, --list and --collect '
                                 'run none: give one or the other')
  else:
    points, _ = load_sweep(config_path)
    if count or list_points:
      log(len(points) if count else '\n'.join(list_lines(root, points)))
      return 0
    if not root.is_dir():
      raise config_lib.ConfigError(f'--workdir {workdir!r} does not exist: no sweep ran '
                                   'there to collect')
    rows = collect(root, points)
  log(f'\n{report_lib.report(root, metric=metric)}')
  return 1 if any(r.get('status') == 'failed' for r in rows) else 0
