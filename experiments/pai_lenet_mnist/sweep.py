"""Pruning at initialisation on LeNet-300-100 / MNIST: SNIP, GraSP, SynFlow
and random masks at 95% and 98% sparsity, 3 seeds, plus the dense baseline.

SNIP (Lee et al. 2019): |w * dL/dw| on one batch; GraSP (Wang et al. 2020):
keep the largest w * Hg; SynFlow (Tanaka et al. 2020): data-free, 100
rounds of iterative pruning; random: uniform per layer. Scores compete in
one global threshold (random: the same rate in every layer). Anchor: SNIP
paper, LeNet-300-100 error 1.7% dense, 1.6% at 95%, 2.4% at 98% (their
training: SGD with momentum, much longer); here Adam 1.2e-3, batch 60,
11,000 steps (12 epochs).

  sparsejax sweep --config experiments/pai_lenet_mnist/sweep.py --workdir runs/pai
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.train.steps = 11000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 11000
  c.pruning.schedule = 'at_init'
  return c


def get_sweep():
  for seed in (0, 1, 2):
    yield {'seed': seed, 'pruning.schedule': 'dense', '_arm': 'dense'}
    for sparsity in (0.95, 0.98):
      for criterion in ('snip', 'grasp', 'synflow', 'random'):
        allocation = 'uniform' if criterion == 'random' else 'global'
        yield {'seed': seed, 'sparsity': sparsity, 'pruning.criterion': criterion,
               'pruning.allocation': allocation, '_arm': criterion}
