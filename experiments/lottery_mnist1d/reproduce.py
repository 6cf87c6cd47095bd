"""Claims of the MNIST-1D lottery against the reference notebook (Greydanus &
Kobak 2020; NOTEBOOK_DIFFERENCES.md): which difference from the notebook
makes our random control stronger and our 99% ticket better. Two runs:
our setting with biases pruned jointly with their kernels
(config_kernel_row.py, 3 seeds) and the notebook's own setting
(config_notebook.py: joint bias pruning, linear k/99 schedule, unshuffled
batches, 1501 steps; 1 seed). Our setting with dense biases is the
committed results.csv of config.py (3 seeds); it is not rerun here."""

import csv
import pathlib
import statistics

from sparsejax.reproduce import Claim

LOTTERY = ['config_kernel_row.py', 'config_notebook.py']
# The current notebook's printed accuracies (anchor.md: lottery-tickets.ipynb,
# content of commit 6d96bd4, unchanged at 7878d96): random control at
# 0.89-0.90 sparsity over two trials, tickets at 0.90 and 0.99 over two. The
# bands were (61.2, 67.4) and (44.5, 46.6) from the earlier notebook
# (59074907) until the anchor was checked; no ticket-at-90% claim existed.
NOTEBOOK_RANDOM_90 = (60.5, 65.7)
NOTEBOOK_TICKET_90 = (74.1, 74.3)
NOTEBOOK_TICKET_99 = (41.5, 41.9)
# ticket at 0.90 minus the mean of the four random values at 0.89 / 0.90
NOTEBOOK_TICKET_GAIN_90 = 74.2 - (63.3 + 60.5 + 63.9 + 65.7) / 4
SLACK = 2.0   # points around the notebook's range


def _ours_dense_biases():
  """{(level, arm): mean test accuracy %} of the committed config.py run."""
  path = pathlib.Path(__file__).with_name('results.csv')
  with open(path) as f:
    return {(int(r['level']), r['arm']): 100 * float(r['mean']) for r in csv.DictReader(f)}


def _acc(rows, spec, arm, level):
  values = [100 * r['final']['test_accuracy'] for r in rows
            if r['config'] == spec and r['arm'] == arm and r['level'] == level]
  return statistics.mean(values) if values else float('nan')


def _fmt(rows, spec, arm, level):
  values = [100 * r['final']['test_accuracy'] for r in rows
            if r['config'] == spec and r['arm'] == arm and r['level'] == level]
  if len(values) > 1:
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})'
  return f'{values[0]:.2f}' if values else 'not run'


def _level_at(rows, spec, sparsity):
  levels = {r['level']: 1 - r['density'] for r in rows if r['config'] == spec}
  return min(levels, key=lambda lv: abs(levels[lv] - sparsity)) if levels else None


def _within(value, bounds):
  return bounds[0] - SLACK <= value <= bounds[1] + SLACK


def claims(rows):
  kr, nb = LOTTERY
  ours = _ours_dense_biases()
  out = []
  for level in (10, 11):   # 89.3% and 91.4% sparsity in our geometric schedule
    before = ours.get((level, 'random_prune'), float('nan'))
    after = _acc(rows, kr, 'random_prune', level)
    out.append(Claim(f'random control, level {level}: biases pruned (kernel_row) vs dense '
                     'biases (results.csv)', 'lower, toward the notebook (60.5-65.7)',
                     f'{_fmt(rows, kr, "random_prune", level)} vs {before:.2f}',
                     '>= 4 points lower', after <= before - 4))
  before = ours.get((21, 'ticket'), float('nan'))
  after = _acc(rows, kr, 'ticket', 21)
  out.append(Claim('ticket at 99.08%: biases pruned vs dense biases', 'toward the '
                   'notebook (41.5-41.9)', f'{_fmt(rows, kr, "ticket", 21)} vs {before:.2f}',
                   '>= 5 points lower', after <= before - 5))
  lv = _level_at(rows, nb, 0.899)
  if lv is not None:
    random_90 = _acc(rows, nb, 'random_prune', lv)
    out.append(Claim(f'notebook setting: random control at 89.9% (level {lv})',
                     '60.5-65.7', f'{random_90:.2f}', f'± {SLACK} around the range',
                     _within(random_90, NOTEBOOK_RANDOM_90)))
    ticket_90 = _acc(rows, nb, 'ticket', lv)
    out.append(Claim(f'notebook setting: ticket at 89.9% (level {lv})', '74.1-74.3',
                     f'{ticket_90:.2f}', f'± {SLACK} around the range',
                     _within(ticket_90, NOTEBOOK_TICKET_90)))
    out.append(Claim('notebook setting: ticket minus random at 89.9%',
                     f'about {NOTEBOOK_TICKET_GAIN_90:+.1f}',
                     f'{ticket_90 - random_90:+.2f}', '>= +5', ticket_90 - random_90 >= 5))
  lv = _level_at(rows, nb, 0.9899)
  if lv is not None:
    ticket_99 = _acc(rows, nb, 'ticket', lv)
    out.append(Claim(f'notebook setting: ticket at 98.99% (level {lv})', '41.5-41.9',
                     f'{ticket_99:.2f}', f'± {SLACK} around the range',
                     _within(ticket_99, NOTEBOOK_TICKET_99)))
  return out
