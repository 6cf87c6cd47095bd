"""Helpers shared by the experiment pipelines that chain `sparsejax` commands
(lm_prune_text/run.py, prune_minilm/run.py): the command's path, run names,
running a command with its log, `/usr/bin/time -v` reports, CSV rows
merged over what is recorded, and finished runs kept in the repository.
Standard library only, except numpy inside `save_run` / `load_run`."""

from __future__ import annotations

import csv
import json
import pathlib
import re
import shlex
import subprocess
import sys
import time
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]


def sparsejax_bin() -> str:
  """The `sparsejax` command next to this Python (a venv's), else on PATH."""
  found = pathlib.Path(sys.executable).parent / 'sparsejax'
  return str(found) if found.exists() else 'sparsejax'


def slug(method: str, target: str) -> str:
  """'wanda', '2:4' -> 'wanda_2of4' (a run directory's name)."""
  return f"{method}_{target.replace('%', '').replace(':', 'of')}"


def run(cmd: list[str], log: pathlib.Path, commands: list[str] | None = None) -> float:
  """Runs `cmd` from the repository root, output to `log` (the command line
  appended to `commands` if given); returns wall seconds, exits on failure."""
  shown = ' '.join(shlex.quote(c) for c in cmd)
  if commands is not None:
    commands.append(shown)
  print(f'$ {shown}', flush=True)
  start = time.perf_counter()
  with open(log, 'w') as f:
    rc = subprocess.call(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  seconds = time.perf_counter() - start
  if rc:
    raise SystemExit(f'exit status {rc} after {seconds:.0f} s; see {log}')
  print(f'  done in {seconds:.0f} s', flush=True)
  return seconds


def parse_time_v(path: pathlib.Path) -> dict:
  """Peak RSS (MiB) and wall seconds from a `/usr/bin/time -v` report."""
  text = path.read_text()
  rss = int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', text).group(1))
  wall = re.search(r'Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)', text).group(1)
  seconds = 0.0
  for part in wall.split(':'):
    seconds = 60 * seconds + float(part)
  return {'peak_rss_mib': rss / 1024, 'command_wall_s': seconds}


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
  """`rows` to `path`, columns in first-seen order."""
  columns = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)


def read_csv(path: pathlib.Path) -> list[dict]:
  """The rows of a CSV `write_csv` wrote (values as strings); [] if absent."""
  if not path.exists():
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def merge_csv(path: pathlib.Path, rows: list[dict], key: tuple[str, ...],
              keep_old: Callable[[dict, dict], bool] = lambda old, new: False) -> list[dict]:
  """Writes `rows` to `path` over the rows recorded there before, matched by
  the `key` columns: a new row replaces the old one with its key (unless
  `keep_old(old, new)`), recorded rows the new ones lack stay, in their
  order, and new keys go last. Run folders do not outlive a session, so a
  pipeline that reruns some of its runs records them without erasing what
  an earlier session measured and committed. Returns the rows written."""
  new = {tuple(str(r.get(k, '')) for k in key): r for r in rows}
  out = []
  for old in read_csv(path):
    k = tuple(old.get(c, '') for c in key)
    if k not in new:
      out.append(old)
      continue
    replacement = new.pop(k)
    out.append(old if keep_old(old, replacement) else replacement)
  out.extend(new.values())
  write_csv(path, out)
  return out


def save_run(directory: pathlib.Path, name: str, arrays: dict, meta: dict) -> None:
  """Keeps one finished run's measurements (small arrays, a JSON-able dict)
  in `directory`/`name`.npz, inside the repository: run folders do not
  outlive a session, these records let a pipeline pool runs made in
  different sessions."""
  import numpy as np
  directory.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(directory / f'{name}.npz', meta=json.dumps(meta), **arrays)


def load_run(directory: pathlib.Path, name: str) -> tuple[dict, dict] | None:
  """(arrays, meta) that `save_run` kept for `name`, else None."""
  import numpy as np
  path = directory / f'{name}.npz'
  if not path.exists():
    return None
  with np.load(path) as f:
    return {k: f[k] for k in f.files if k != 'meta'}, json.loads(str(f['meta']))


def refuse_to_lose(path: pathlib.Path, key: tuple[str, ...], planned: set[tuple],
                   available: set[tuple]) -> None:
  """Exits when `path` records a run this collection plans (`planned`, keys
  as tuples of strings in `key`'s columns) whose measurements are neither
  in its folder nor kept (`available`): recording would replace a measured
  row and the claims that pooled it with a partial collection."""
  lost = sorted(k for k in (tuple(r.get(c, '') for c in key) for r in read_csv(path))
                if k in planned and k not in available)
  if lost:
    raise SystemExit(f'{path.name} records {", ".join("/".join(k) for k in lost)}, whose '
                     'folders are gone and which were never kept; rerun them before '
                     'recording (nothing was written)')
