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
point that fails is recorded with its error while the others go on. On a
cluster, launch one process per point with `--index I` (a job array), then
`sparsejax sweep ... --collect` (or `sparsejax report DIR`) gathers them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Callable

from sparsejax import config as config_lib
from sparsejax.programs import results as results_lib

PROGRAMS = ('train', 'finetune')


def load_sweep(path) -> tuple[list[dict], str]:
  """(points, program) of a sweep config file."""
  path = pathlib.Path(path)
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


def overrides(point: dict) -> dict:
  return {k: v for k, v in point.items() if not k.startswith('_')}


def point_name(point: dict) -> str:
  if '_name' in point:
    return str(point['_name'])
  text = json.dumps(overrides(point), sort_keys=True, default=str)
  digest = hashlib.sha256(text.encode()).hexdigest()[:10]
  return f'{point.get("_arm", "point")}_{digest}'


def command(program: str, config_path, workdir, point: dict, root='') -> list[str]:
  args = [sys.executable, '-m', 'sparsejax.cli', program, '--config', str(config_path),
          '--workdir', str(workdir), '--no-progress']
  for k, v in overrides(point).items():
    if isinstance(v, str):
      v = v.replace('{workdir}', str(root))
    args.append(f'--config.{k}={v!r}' if not isinstance(v, str) else f'--config.{k}={v}')
  return args


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


def _last_error_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  useful = [line for line in lines if not line.startswith((' ', 'Traceback', 'exit status'))]
  return (useful or lines or ['unknown error'])[-1][:500]


def collect(root: pathlib.Path, points: list[dict]) -> list[dict]:
  """Result rows of all points, failed ones with their error; writes results.jsonl."""
  rows = []
  for i, point in enumerate(points):
    workdir = root / point_name(point)
    ids = {'index': i, 'arm': point.get('_arm', 'point'),
           'seed': point.get('seed', 0), 'level': None,
           'setting': {k: v for k, v in overrides(point).items() if k != 'seed'}}
    if (workdir / 'summary.json').exists():
      row = results_lib.run_row(workdir, **ids)
      extra = workdir / 'row.json'
      if extra.exists():   # finetune writes its budget and memory figures here
        row.update({k: v for k, v in json.loads(extra.read_text()).items()
                    if k in ('peft', 'after_pruning')})
      rows.append(row)
    elif (workdir / 'error.txt').exists():
      rows.append(results_lib.failed_row(
          _last_error_line((workdir / 'error.txt').read_text()), **ids))
    else:
      rows.append(results_lib.failed_row('not run yet', **ids))
  results_lib.write_rows(root / 'results.jsonl', rows)
  return rows


def run_sweep(config_path, workdir, *, jobs: int = 1, index: int | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
  """Runs the sweep (or one point of it) and returns the collected rows."""
  points, program = load_sweep(config_path)
  root = pathlib.Path(workdir).absolute()
  root.mkdir(parents=True, exist_ok=True)
  (root / 'sweep.json').write_text(json.dumps(
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
        extra = ': ' + _last_error_line((root / point_name(p) / 'error.txt').read_text())
      log(f'[{done}/{len(todo)}] point {i} {point_name(p)} {status} ({secs:.0f} s){extra}')
  return collect(root, points)
