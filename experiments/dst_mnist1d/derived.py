"""The derived numbers experiments/dst_mnist1d/README.md quotes, into
derived.csv:

- differences of group means (in points) from results.csv, and one from
  results_5343c66.csv (the previous recording's results.csv, as committed in
  5343c66);
- ERK's per-layer densities of the MLP 40-500-500-10 at 80% and 90%, which
  depend only on the layer shapes: computed with sparsejax's own
  `erk_sparsities` (what the runs used to allocate; no training).

  python experiments/dst_mnist1d/derived.py
"""

import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
KERNELS = {'hidden_0/kernel': (40, 500), 'hidden_1/kernel': (500, 500),
           'output/kernel': (500, 10)}     # the prunable kernels of configs/mnist1d_mlp.py


def _groups(name):
  with open(HERE / name, newline='') as f:
    return {(r['arm'], r['sparsity']): r for r in csv.DictReader(f)}


def main():
  from sparsejax import erk_sparsities

  now, then = _groups('results.csv'), _groups('results_5343c66.csv')

  def mean(arm, sparsity, groups=now):
    return 100 * float(groups[(arm, sparsity)]['mean'])

  rows = []

  def add(quantity, value, how):
    rows.append((quantity, f'{value:.4f}', how))

  for method in ('set', 'rigl'):
    add(f'{method} - static, uniform, 80% (points)',
        mean(f'{method}-uniform', '0.8') - mean('static-uniform', '0.8'),
        f'mean({method}-uniform) - mean(static-uniform) at sparsity 0.8')
  for alloc in ('uniform', 'erk'):
    for method in ('set', 'rigl'):
      add(f'{method} - static, {alloc}, 90% (points)',
          mean(f'{method}-{alloc}', '0.9') - mean(f'static-{alloc}', '0.9'),
          f'mean({method}-{alloc}) - mean(static-{alloc}) at sparsity 0.9')
  for s in ('0.8', '0.9'):
    add(f'RigL - SET, uniform, {float(s):.0%} (points)',
        mean('rigl-uniform', s) - mean('set-uniform', s),
        f'mean(rigl-uniform) - mean(set-uniform) at sparsity {s}')
  add('RigL - SET, uniform, 80%, previous recording (points)',
      mean('rigl-uniform', '0.8', then) - mean('set-uniform', '0.8', then),
      'the same from results_5343c66.csv')
  for method in ('static', 'set', 'rigl'):
    for s in ('0.8', '0.9'):
      add(f'uniform - ERK, {method}, {float(s):.0%} (points)',
          mean(f'{method}-uniform', s) - mean(f'{method}-erk', s),
          f'mean({method}-uniform) - mean({method}-erk) at sparsity {s}')
  for s in (0.8, 0.9):
    for path, density in ((p, 1 - v) for p, v in erk_sparsities(KERNELS, s).items()):
      add(f'ERK density of {path} {KERNELS[path]} at {s:.0%} (%)', 100 * density,
          f'100 * (1 - sparsejax.erk_sparsities(kernel shapes, {s})[{path}])')
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['quantity', 'value', 'how'])
    writer.writerows(rows)


if __name__ == '__main__':
  main()
