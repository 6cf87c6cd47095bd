"""Static sparse vs SET vs RigL on MNIST-1D (MLP 40-500-500-10), 80% and 90%
sparsity, uniform and ERK allocation, 5 seeds, plus the dense baseline.

Static: a random mask fixed at initialisation. SET (Mocanu et al. 2018):
every 100 steps drop 30% of each layer's active weights with the smallest
|w| and regrow as many at random. RigL (Evci et al. 2020): the same drop,
regrowth where the dense gradient is largest, drop fraction decaying by a
cosine from 0.3 to 0 at 75% of training. Anchor (RigL reproducibility
report, CIFAR-10 WRN-22-2 at 80%): static 91.2 < SET 92.7, RigL 92.6; expect
dynamic above static by a clear margin at 90%, SET and RigL close.

`set_cosine` is SET on RigL's schedule (the drop fraction decayed by the same
cosine), as the RigL paper runs SET; claims.md holds the claims of this
5-seed protocol, fixed before its runs. Per-example test results for the
paired intervals: `python experiments/dst_mnist1d/paired.py --workdir
runs/dst_mnist1d` after the sweep.

  sparsejax sweep --config experiments/dst_mnist1d/sweep.py --workdir runs/dst_mnist1d
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
STEPS = 3000
SEEDS = (0, 1, 2, 3, 4)


def get_config():
  c = load_config(CONFIGS / 'mnist1d_mlp.py')
  c.train.steps = STEPS
  c.train.eval_every = 500
  c.train.checkpoint_every = STEPS
  return c


def get_sweep():
  for seed in SEEDS:
    yield {'seed': seed, '_arm': 'dense'}
    for sparsity in (0.8, 0.9):
      for allocation in ('uniform', 'erk'):
        tag = f'-{allocation}'
        yield {'seed': seed, 'sparsity': sparsity, 'pruning.allocation': allocation,
               'pruning.schedule': 'at_init', 'pruning.criterion': 'random',
               '_arm': 'static' + tag}
        yield {'seed': seed, 'sparsity': sparsity, 'pruning.allocation': allocation,
               'pruning.schedule': 'set', 'pruning.every': 100, 'pruning.end': 0.75,
               '_arm': 'set' + tag}
        yield {'seed': seed, 'sparsity': sparsity, 'pruning.allocation': allocation,
               'pruning.schedule': 'set', 'pruning.every': 100, 'pruning.end': 0.75,
               'pruning.decay': 'cosine', '_arm': 'set_cosine' + tag}
        yield {'seed': seed, 'sparsity': sparsity, 'pruning.allocation': allocation,
               'pruning.schedule': 'rigl', 'pruning.every': 100,
               'pruning.end': 0.75, '_arm': 'rigl' + tag}
