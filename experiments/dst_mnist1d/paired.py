"""Paired intervals and the claims of claims.md for the 5-seed DST sweep.

After `sparsejax sweep --config experiments/dst_mnist1d/sweep.py --workdir
runs/dst_mnist1d --jobs 2`, this evaluates every finished run's last
checkpoint per test example (what `sparsejax eval --per-example` writes,
kept as test_per_example.npz in the run's folder; skipped when there) and
compares arms on the same examples: per seed the runs pair up, and the
paired bootstrap resamples test examples with the seeds averaged within an
example (sparsejax.programs.stats.paired_bootstrap).

  .venv/bin/python experiments/dst_mnist1d/paired.py --workdir runs/dst_mnist1d [--record]
  .venv/bin/python experiments/dst_mnist1d/paired.py --folder dst_lenet_mnist --workdir runs/dst_lenet [--record]

--record writes results/paired.csv (every comparison) and results/claims.csv
(D1-D4 with verdicts) into the experiment's folder (this one, or --folder's,
whose sweep.py runs the same points and whose claims.md sets its own bars).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from sparsejax import experiment, sweep  # noqa: E402
from sparsejax.programs import evaluate, stats  # noqa: E402

FILE = 'test_per_example.npz'
# folder -> (CLEAR, CLOSE) in points, from that folder's claims.md
BARS = {'dst_mnist1d': (2.0, 1.5), 'dst_lenet_mnist': (0.5, 0.3)}


def per_example(root: pathlib.Path, points) -> dict:
  """{(arm, sparsity, seed): per-example test accuracy} of the finished runs."""
  out = {}
  for point in points:
    workdir = root / sweep.point_name(point)
    if not (workdir / 'summary.json').exists():
      continue
    path = workdir / FILE
    if not path.exists():
      summary = evaluate.evaluate(experiment.task_of_run(workdir), workdir, ['test'],
                                  per_example=True)
      evaluate.save_per_example(path, summary['per_example'])
    with np.load(path) as f:
      out[(point['_arm'], point.get('sparsity', 0.0), point['seed'])] = f['test_accuracy']
  return out


def compare(acc: dict, a: str, b: str, sparsity: float) -> dict | None:
  """a - b in points over the seeds both arms finished, with its interval."""
  seeds = sorted(s for (arm, sp, s) in acc if arm == a and sp == sparsity
                 and (b, sparsity, s) in acc)
  if not seeds:
    return None
  xa = np.stack([acc[(a, sparsity, s)] for s in seeds], axis=1)    # (examples, seeds)
  xb = np.stack([acc[(b, sparsity, s)] for s in seeds], axis=1)
  mean, low, high = stats.paired_bootstrap(100 * xa, 100 * xb)
  return {'a': a, 'b': b, 'sparsity': sparsity, 'seeds': len(seeds),
          'a_mean': round(100 * float(xa.mean()), 3), 'b_mean': round(100 * float(xb.mean()), 3),
          'diff_points': round(mean, 3), 'ci95_lo': round(low, 3), 'ci95_hi': round(high, 3),
          'examples': int(xa.shape[0])}


def claims(rows: dict, bars=BARS['dst_mnist1d']) -> list[dict]:
  clear, close = bars

  def row(a, b, sp):
    return rows.get((a, b, sp))

  out = []

  def add(claim, passed, ci_inside, text):
    out.append({'claim': claim, 'ours': text,
                'verdict': {True: 'pass', False: 'miss', None: 'not run'}[passed],
                'interval': '' if passed is None else ('inside' if ci_inside else 'not inside')})

  def fmt(r):
    return (f"{r['a']} - {r['b']} at {r['sparsity']:.0%}: {r['diff_points']:+.2f} "
            f"(95% CI {r['ci95_lo']:+.2f} to {r['ci95_hi']:+.2f}, {r['seeds']} seeds)")

  for number, sp, bound in (('D1', 0.8, 0.0), ('D2', 0.9, clear)):
    rs = [row(f'{m}-uniform', 'static-uniform', sp) for m in ('set_cosine', 'rigl')]
    if not all(rs):
      add(number, None, None, '')
      continue
    passed = all(r['diff_points'] > bound if bound == 0 else r['diff_points'] >= bound
                 for r in rs) and all(r['ci95_lo'] > 0 for r in rs)
    inside = all(r['ci95_lo'] > bound if bound == 0 else r['ci95_lo'] >= bound for r in rs)
    add(number, passed, inside, '; '.join(map(fmt, rs)))
  rs = [row('rigl-uniform', 'set_cosine-uniform', sp) for sp in (0.8, 0.9)]
  if all(rs):
    add('D3', all(abs(r['diff_points']) <= close for r in rs),
        all(-close <= r['ci95_lo'] and r['ci95_hi'] <= close for r in rs),
        '; '.join(map(fmt, rs)))
  else:
    add('D3', None, None, '')
  rs = [row('set_cosine-uniform', 'set-uniform', sp) for sp in (0.8, 0.9)]
  out.append({'claim': 'D4', 'ours': '; '.join(fmt(r) for r in rs if r), 'verdict': '-',
              'interval': ''})
  return out


COMPARISONS = [(f'{m}-{al}', f'static-{al}') for al in ('uniform', 'erk')
               for m in ('set', 'set_cosine', 'rigl')] + \
              [(f'rigl-{al}', f'set_cosine-{al}') for al in ('uniform', 'erk')] + \
              [(f'set_cosine-{al}', f'set-{al}') for al in ('uniform', 'erk')]


def write(path: pathlib.Path, rows: list[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='runs/dst_mnist1d')
  parser.add_argument('--record', action='store_true')
  parser.add_argument('--folder', default=HERE.name, choices=sorted(BARS),
                      help='the experiment folder whose sweep and claims to use')
  args = parser.parse_args(argv)
  folder = HERE.parent / args.folder
  points, _ = sweep.load_sweep(folder / 'sweep.py')
  acc = per_example(pathlib.Path(args.workdir), points)
  rows = {}
  for a, b in COMPARISONS:
    for sp in (0.8, 0.9):
      r = compare(acc, a, b, sp)
      if r:
        rows[(a, b, sp)] = r
        print(f"{a:>20} - {b:<18} {sp:.0%}: {r['diff_points']:+6.2f} points "
              f"({r['ci95_lo']:+.2f} to {r['ci95_hi']:+.2f}), {r['seeds']} seeds")
  verdicts = claims(rows, BARS[args.folder])
  for c in verdicts:
    print(f"{c['verdict']:>7}  {c['claim']}: {c['ours']} (interval {c['interval'] or '-'})")
  if args.record and rows:
    write(folder / 'results' / 'paired.csv', list(rows.values()))
    write(folder / 'results' / 'claims.csv', verdicts)


if __name__ == '__main__':
  main()
