"""A sweep of 3 methods x 3 sparsities x 3 seeds (MNIST-1D MLP, 600 steps)
plus one point that fails, to show what a killed and re-run sweep does:
only the missing points run again, the failed point is reported with its
error, the others complete. See README.md for the recorded run.

  sparsejax sweep --config experiments/sweep_resume_demo/sweep.py --workdir runs/sweep_demo
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'


def get_config():
  c = load_config(CONFIGS / 'mnist1d_mlp.py')
  c.train.steps = 600
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  c.model.options = {'hidden': 100}
  return c


def get_sweep():
  for seed in (0, 1, 2):
    for sparsity in (0.5, 0.8, 0.9):
      yield {'seed': seed, 'sparsity': sparsity, 'pruning.schedule': 'at_init',
             'pruning.criterion': 'random', '_arm': 'static'}
      yield {'seed': seed, 'sparsity': sparsity, 'pruning.schedule': 'gradual',
             'pruning.start': 100, 'pruning.end': 0.75, 'pruning.every': 100,
             '_arm': 'gradual'}
      yield {'seed': seed, 'sparsity': sparsity, 'pruning.schedule': 'rigl', 'pruning.every': 100,
             'pruning.end': 0.75, '_arm': 'rigl'}
  # This point fails when it runs: the split has 4000 training examples.
  yield {'seed': 0, 'data.options': {'validation': 10 ** 6}, '_arm': 'broken'}
