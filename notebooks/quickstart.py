# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # sparsejax quick start
#
# Three things in about half a minute on 2 CPU cores, on MNIST-1D (generated
# locally, nothing downloaded):
#
# 1. `sparsify` with RigL on your own Flax model, in your own training loop;
# 2. a 3-level lottery (iterative magnitude pruning, rewinding to the
#    initial weights);
# 3. the report: tables and plots.
#
# Run it in the environment of the README's setup commands (its Python as the
# kernel), or as a script: `.venv/bin/python notebooks/quickstart.py`. This
# notebook is paired with `quickstart.py` (jupytext's percent format;
# `jupytext --sync notebooks/quickstart.py` after editing either);
# `tests/test_docs.py` runs the script end to end and checks that both hold
# the same cells. Everything is written under a temporary folder.

# %%
import pathlib
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import sparsejax as sj
from sparsejax import data
from sparsejax.programs import lottery, report
from sparsejax.train.task import LoopSettings, Task

work = pathlib.Path(tempfile.mkdtemp(prefix='sparsejax_quickstart_'))
ds = data.load_dataset('mnist1d')     # 4000 train / 1000 test signals of length 40
print(ds.name, ds.train.x.shape, ds.test.x.shape, ds.num_classes)

# %% [markdown]
# ## 1. Your own model, sparse from the start with RigL
#
# Any Flax model: here a two-layer MLP. `sparsify` wraps any optax optimizer;
# its state owns the masks, and after every update the pruned weights are
# exactly 0.0. RigL (Evci et al. 2020) starts from a random mask at 90%
# sparsity (ERK allocation) and every 50 steps drops the smallest active
# weights and grows the inactive ones with the largest gradients.


# %%
class MLP(nn.Module):
  hidden: int = 128

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(10, name='output')(x)


model = MLP()
params = model.init(jax.random.key(0), jnp.zeros((1, 40)))['params']

schedule = sj.make_schedule('rigl', sparsity=0.9, every=50, end=300)
tx = sj.sparsify(optax.adam(3e-3), schedule)
opt_state = jax.jit(tx.init)(params)   # draws the random 90% mask
params = sj.masked_params(params, opt_state)     # start from the sparse model


def loss_fn(params, x, y):
  logits = model.apply({'params': params}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@jax.jit
def train_step(params, opt_state, x, y):
  loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def accuracy(params):
  logits = model.apply({'params': params}, ds.test.x)
  return float(jnp.mean(jnp.argmax(logits, -1) == ds.test.y))


for step in range(400):
  x, y = ds.train.get(data.batch_indices(len(ds.train), 128, 0, step))
  params, opt_state, loss = train_step(params, opt_state, x, y)
  if step % 100 == 0:
    print(f'step {step:3d}  loss {float(loss):.3f}')

masks = sj.get_masks(opt_state)
print(f'RigL: sparsity {float(sj.overall_sparsity(masks)):.3f}, '
      f'test accuracy {accuracy(params):.3f}')
print('active weights per layer:', sj.count_active(masks))

# %%
# Every pruned weight is exactly zero, in every layer.
is_none = lambda x: x is None      # biases have no mask: None
for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks, is_leaf=is_none)):
  assert m is None or not np.any(np.asarray(p)[~np.asarray(m)])

# %% [markdown]
# ## 2. A 3-level lottery
#
# The same model as a `Task` (model, data, optimizer, length). Level 0 trains
# it dense; each level prunes 50% of the remaining weights by magnitude,
# rewinds the kept ones to their initial values and retrains with the mask
# fixed. Every run is an ordinary workdir, so running this cell again skips
# the finished runs. `controls=('random_prune',)` would add, at every level, a
# random mask with the same per-layer sparsities, trained from the same
# initial weights (the lottery's control; `reinit` and `oneshot` are the
# others).

# %%
task = Task(dataset=ds, model=MLP(), optimizer=optax.adam(3e-3), schedule=sj.Dense(),
            batch_size=128,
            loop=LoopSettings(steps=300, eval_every=100, checkpoint_every=300))
rows = lottery.run_lottery(task, work / 'lottery',
                           lottery.Lottery(levels=3, prune_fraction=0.5))
print([(row['level'], round(row['density'], 3), row['final']['test_accuracy'])
       for row in rows])

# %% [markdown]
# ## 3. The report
#
# `report` reads the runs' result rows and writes `report.md`, `report.csv`
# and the plots (accuracy against weights remaining, accuracy against
# iteration for a few levels, per-layer density of the sparsest ticket).

# %%
text = report.report(work / 'lottery', work / 'report')
print(text)

# %%
try:                                          # in Jupyter: show the plots
  from IPython.display import Image, display
except ImportError:                           # as a script: list them
  Image, display = None, print
for png in sorted((work / 'report').glob('*.png')):
  display(png if Image is None else Image(filename=str(png)))
