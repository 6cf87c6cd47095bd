"""Helpers shared by the experiment pipelines that chain `sparsejax` commands
(lm_prune_text/run.py, prune_minilm/run.py): the command's path, run names,
running a command with its log, `/usr/bin/time -v` reports and CSV rows.
Standard library only."""

from __future__ import annotations

import csv
import pathlib
import re
import shlex
import subprocess
import sys
import time

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
