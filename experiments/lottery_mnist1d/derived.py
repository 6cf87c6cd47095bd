"""The differences experiments/lottery_mnist1d/README.md quotes in its first
table (ticket minus dense, ticket minus random, in points of test accuracy),
computed from results.csv (one row per level and arm, mean over seeds) into
derived.csv. Differences are of the unrounded means.

  python experiments/lottery_mnist1d/derived.py
"""

import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def main():
  with open(HERE / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  mean = {(int(r['level']), r['arm']): 100 * float(r['mean']) for r in rows}
  density = {int(r['level']): float(r['density']) for r in rows}
  out = []
  for level in sorted(density):
    if level == 0:
      continue
    sparsity = 100 * (1 - density[level])
    out.append((level, f'{sparsity:.1f}',
                f'{mean[(level, "ticket")] - mean[(0, "ticket")]:+.4f}',
                f'{mean[(level, "ticket")] - mean[(level, "random_prune")]:+.4f}'))
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['level', 'sparsity_pct', 'ticket_minus_dense_points',
                'ticket_minus_random_points'])
    w.writerows(out)


if __name__ == '__main__':
  main()
