"""The points of a config sweep in their run directories: each point's
directory name (`point_name`: its `_name`, else its arm and a hash of its
overrides), its status there (`point_status`), and the sweep's result rows
gathered from them into results.jsonl (`collect`, under a lock, so that the
tasks of a job array can each collect as they end). `sparsejax.sweep` runs
the points; these read what they leave.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import uuid

from sparsejax.programs import results as results_lib


def overrides(point: dict) -> dict:
  return {k: v for k, v in point.items() if not k.startswith('_')}


def point_name(point: dict) -> str:
  if '_name' in point:
    return str(point['_name'])
  text = json.dumps(overrides(point), sort_keys=True, default=str)
  digest = hashlib.sha256(text.encode()).hexdigest()[:10]
  return f'{point.get("_arm", "point")}_{digest}'


def point_status(root, point: dict) -> str:
  """'done' (its summary.json exists), 'failed' (its error.txt) or 'todo'."""
  workdir = pathlib.Path(root) / point_name(point)
  if (workdir / 'summary.json').exists():
    return 'done'
  return 'failed' if (workdir / 'error.txt').exists() else 'todo'


def last_error_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  useful = [line for line in lines if not line.startswith((' ', 'Traceback', 'exit status'))]
  return (useful or lines or ['unknown error'])[-1][:500]


@contextlib.contextmanager
def _locked(root: pathlib.Path):
  """Holds an exclusive lock (flock) on `root`'s .sweep.lock, so the collects
  of a job array's tasks run one after another and the last one sees every
  finished point. Where the file system has no locks it goes on without:
  `--collect` after the array still gathers everything."""
  try:
    import fcntl
    lock = open(root / '.sweep.lock', 'a')
  except (ImportError, OSError):
    yield
    return
  with lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError:
      pass
    yield


def collect(root: pathlib.Path, points: list[dict]) -> list[dict]:
  """Result rows of all points, failed ones with their error; writes
  results.jsonl. Safe to run from several processes at once."""
  root = pathlib.Path(root)
  with _locked(root):
    rows = _rows(root, points)
    mine = root / f'.results.{uuid.uuid4().hex}.jsonl'
    results_lib.write_rows(mine, rows)    # its own temporary file is ours alone too
    mine.replace(root / 'results.jsonl')
  return rows


def _rows(root: pathlib.Path, points: list[dict]) -> list[dict]:
  """The result row of each point, in the sweep's order."""
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
          last_error_line((workdir / 'error.txt').read_text()), **ids))
    else:
      rows.append(results_lib.failed_row('not run yet', **ids))
  return rows
