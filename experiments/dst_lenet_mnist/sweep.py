"""Static sparse vs SET vs RigL on MNIST, LeNet-300-100: the points of
experiments/dst_mnist1d/sweep.py (80% and 90%, uniform and ERK; static,
SET, SET on RigL's cosine schedule, RigL; 5 seeds, plus dense) on LeNet-300-100 (Adam 1.2e-3, batch 60, 11,000 steps, 12
epochs). Anchor: RigL paper appendix, LeNet-300-100 at about 87% sparsity,
1.44-1.48% error; expect dynamic above static at 90%, SET and RigL close.
The claims of this 5-seed protocol: claims.md (fixed before its runs); the
paired intervals: `python experiments/dst_mnist1d/paired.py --folder
dst_lenet_mnist --workdir runs/dst_lenet --record` after the sweep.

  sparsejax sweep --config experiments/dst_lenet_mnist/sweep.py --workdir runs/dst_lenet
"""

import importlib.util
import pathlib

from sparsejax.config import load_config

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / 'configs'
STEPS = 11000

_spec = importlib.util.spec_from_file_location('_dst_mnist1d', HERE.parent / 'dst_mnist1d' /
                                               'sweep.py')
_dst = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dst)
get_sweep = _dst.get_sweep


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.train.steps = STEPS
  c.train.eval_every = 1000
  c.train.checkpoint_every = STEPS
  return c
