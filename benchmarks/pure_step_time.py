"""Pure step time of the runs under a workdir, to set wall time against
(issue 13.6): per run, its last train step over the median steps/s of the
loop's logged windows (which leave out evaluation and saving), summed.

  python benchmarks/pure_step_time.py WORKDIR [WALL_SECONDS]
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys


def pure_step_seconds(root) -> tuple[int, float]:
  """(number of runs, summed pure step seconds) over every metrics.jsonl under root."""
  runs, total = 0, 0.0
  for path in sorted(pathlib.Path(root).rglob('metrics.jsonl')):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get('kind') == 'train']
    rates = [r['steps_per_sec'] for r in train if r.get('steps_per_sec')]
    if rates:
      runs += 1
      total += max(r['step'] for r in train) / statistics.median(rates)
  return runs, total


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if not argv:
    raise SystemExit(__doc__)
  runs, total = pure_step_seconds(argv[0])
  line = f'{runs} runs, pure step time {total:.1f} s'
  if len(argv) > 1:
    line += f', wall {float(argv[1]):.1f} s = {float(argv[1]) / total:.2f}x'
  print(line)


if __name__ == '__main__':
  main()
