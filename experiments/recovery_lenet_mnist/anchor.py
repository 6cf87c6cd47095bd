"""Han et al. 2015's anchor with a longer budget: LeNet-300-100 at 12x
compression (91.7% sparsity), global magnitude, 10,000 fine-tuning steps
(5x the recovery table's 2,000) for one-shot + fixed-mask fine-tuning and
for gradual magnitude pruning (pruning over the first 7,500 steps), from
the dense models of dense.py. Han et al. report 1.64% -> 1.59% error.

  sparsejax sweep --config experiments/recovery_lenet_mnist/anchor.py --workdir runs/recovery/anchor
"""

import importlib.util
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
PROGRAM = 'finetune'
STEPS = 10000
SPARSITY = round(1 - 1 / 12, 6)

_spec = importlib.util.spec_from_file_location('_recovery', HERE / 'recovery.py')
_recovery = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_recovery)


def get_config():
  c = _recovery.get_config()
  c.train.steps = STEPS
  c.train.eval_every = 500
  c.train.log_every = 500
  c.train.checkpoint_every = STEPS
  c.train.early_stopping = 6
  return c


def get_sweep():
  for seed in _recovery.SEEDS:
    dense = f'{{workdir}}/../dense/seed_{seed}'
    base = {'seed': seed, 'sparsity': SPARSITY, 'finetune.init_from': dense,
            'pruning.allocation': 'global'}
    yield {**base, 'pruning.schedule': 'oneshot', 'pruning.criterion': 'magnitude',
           '_arm': 'oneshot-global-magnitude'}
    yield {**base, 'pruning.schedule': 'gradual', 'pruning.start': 0,
           'pruning.end': int(0.75 * STEPS), 'pruning.every': 250, 'train.early_stopping': 0,
           '_arm': 'gradual-magnitude'}
