"""Why does our dense LeNet-300-100 stop early at 3,300 iterations (seed 0 of
config_50k.py) when a third-party reading of the paper's Figure 4a gives
about 14K? (issue 26; exploratory: no claims, nothing here is a verdict.)

The dense network of config_50k.py (Adam 1.2e-3, batch 60, evaluation every
100 iterations on the 5k validation images) for 20,000 iterations, 3 seeds,
in three variants:

- `ours`: the setting as it is (pixels x / 255, the last 5k of the 60k
  training images for validation);
- `standardized`: pixels standardised with the training pool's mean and
  standard deviation, as the reference implementations of several pruning
  papers do (`data.options.standardize`);
- `lr_0.6e-3`: half the learning rate, to see how the stopping point moves
  with the optimiser's speed.

`early_stop.py` reads the runs: the iteration of the minimum validation loss,
how flat the minimum is (the iterations whose validation loss is within 1%
and 2% of it), and the test accuracy there.

  sparsejax sweep --config experiments/lottery_lenet_mnist/dense_early_stop.py --workdir runs/lenet_early_stop
  python experiments/lottery_lenet_mnist/early_stop.py runs/lenet_early_stop [--record]
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
STEPS = 20_000
SEEDS = (0, 1, 2)
VARIANTS = {
    'ours': {},
    'standardized': {'data.options': {'split': '55k/5k/10k', 'standardize': True}},
    'lr_0.6e-3': {'optimizer.learning_rate': 6e-4},
}


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.train.steps = STEPS
  c.train.eval_every = 100
  c.train.log_every = 1000
  c.train.checkpoint_every = STEPS
  return c


def get_sweep():
  for seed in SEEDS:
    for name, keys in VARIANTS.items():
      yield {'seed': seed, '_arm': name, **keys}
