"""Early-stopping points of the dense runs of dense_early_stop.py: per run,
the iteration of the minimum validation loss, the first and last iteration
whose validation loss is within 1% (and 2%) of that minimum (how flat the
minimum is), and the test accuracy at the minimum; then per variant the mean
and range over seeds.

  python experiments/lottery_lenet_mnist/early_stop.py runs/lenet_early_stop [--record]

--record writes early_stop.csv (one row per run) into this folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import statistics

HERE = pathlib.Path(__file__).resolve().parent


def early_stop(metrics: pathlib.Path) -> dict | None:
  rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
  evals = [r for r in rows if r.get('kind') == 'eval' and 'validation_loss' in r]
  if not evals:
    return None
  best = min(evals, key=lambda r: (r['validation_loss'], r['step']))
  out = {'last_step': evals[-1]['step'], 'stop_step': best['step'],
         'min_validation_loss': round(best['validation_loss'], 5),
         'test_accuracy_at_stop': round(best['test_accuracy'], 5),
         'final_validation_loss': round(evals[-1]['validation_loss'], 5),
         'final_test_accuracy': round(evals[-1]['test_accuracy'], 5)}
  for pct in (1, 2):
    near = [r['step'] for r in evals if r['validation_loss'] <= best['validation_loss'] * (1 + pct / 100)]
    out[f'within_{pct}pct_first'], out[f'within_{pct}pct_last'] = min(near), max(near)
  return out


def collect(root: pathlib.Path) -> list[dict]:
  out = []
  for run in sorted(root.iterdir()):
    cfg, metrics = run / 'config.json', run / 'metrics.jsonl'
    if not (run / 'summary.json').exists() or not metrics.exists():
      continue
    config = json.loads(cfg.read_text())
    found = early_stop(metrics)
    if found:
      out.append({'variant': run.name.rsplit('_', 1)[0], 'seed': config.get('seed'), **found})
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdir')
  parser.add_argument('--record', action='store_true')
  args = parser.parse_args(argv)
  rows = collect(pathlib.Path(args.workdir))
  for variant in sorted({r['variant'] for r in rows}):
    rs = [r for r in rows if r['variant'] == variant]
    stops = [r['stop_step'] for r in rs]
    print(f"{variant:>14}: stop {statistics.mean(stops):7.0f} (min {min(stops)}, max {max(stops)}),"
          f" within 1% of the minimum from {min(r['within_1pct_first'] for r in rs)}"
          f" to {max(r['within_1pct_last'] for r in rs)}, test acc at stop "
          f"{100 * statistics.mean(r['test_accuracy_at_stop'] for r in rs):.2f}, n={len(rs)}")
  if args.record and rows:
    with open(HERE / 'early_stop.csv', 'w', newline='') as f:
      w = csv.DictWriter(f, list(rows[0]))
      w.writeheader()
      w.writerows(rows)


if __name__ == '__main__':
  main()
