"""What the parameter-efficient methods are: their settings, the trainable
trees and how they merge into full params (row deltas, LoRA factors, K
individual weights, everything), the model that trains them, and row scores
(Li & Bhaskara 2025; Hu et al. 2022; Ansell et al. 2022). `peft` runs them."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import select, tree as tree_lib
from sparsejax.train.task import SetupError

PyTree = Any


# --- settings ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  init_from: str         # a sparsejax workdir or checkpoint, or a .npz / .safetensors file
  method: str            # 'masked', 'row', 'lora', 'unstructured', 'full'
  targets: str           # regex: the weight matrices the PEFT methods adapt
  head: str              # regex: params trained in full by every method (a new head)
  rows: int              # row method: rows (output neurons) per target matrix
  rank: int              # lora: rank per target matrix
  alpha: float           # lora: scale alpha / rank; 0 means alpha = rank
  budget: str            # row method: 'per_layer' (rows each) or 'global' (rows x layers)
  row_score: str         # 'l2', 'taylor', 'random', 'activation'
  score_batches: int     # batches for the taylor / activation scores and gradient selection
  select: str            # unstructured: 'delta' (LT-SFT) or 'gradient'
  dense_steps: int       # unstructured 'delta': steps of the dense phase
  trainable: int         # unstructured: trainable weights; 0 = the row method's count


FINETUNE_METHODS = ('masked', 'row', 'lora', 'unstructured', 'full')
ROW_SCORES = ('l2', 'taylor', 'random', 'activation')
NOTHING_PRUNABLE = tree_lib.PrunableRule(include='(?!)')   # PEFT runs keep no masks


# --- methods: trainable trees and how they merge into full params -----------------

@dataclasses.dataclass(frozen=True)
class Method:
  """Static description of what is trained; `merge` is pure and jit-safe."""
  kind: str                                   # 'row', 'lora', 'unstructured', 'full'
  targets: tuple[str, ...] = ()               # adapted kernel paths
  head: tuple[str, ...] = ()                  # paths trained in full
  rows: tuple[tuple[int, ...], ...] = ()      # row method: column indices per target
  entries: tuple[tuple[int, ...], ...] = ()   # unstructured: flat indices per target
  rank: int = 0
  scale: float = 1.0                          # lora: alpha / rank

  def init_trainable(self, params: PyTree, key) -> dict:
    flat = dict(tree_lib.leaves_with_paths(params))
    out = {'head': {p: jnp.asarray(flat[p]) for p in self.head}}
    if self.kind == 'full':
      return {'all': params}
    if self.kind == 'row':
      out['rows'] = {p: jnp.zeros((len(idx), flat[p].shape[0]), flat[p].dtype)
                     for p, idx in zip(self.targets, self.rows)}
    elif self.kind == 'lora':
      keys = jax.random.split(key, max(len(self.targets), 1))
      out['lora'] = {p: {'a': jax.random.normal(k, (flat[p].shape[0], self.rank), flat[p].dtype)
                              / np.sqrt(flat[p].shape[0]),
                         'b': jnp.zeros((self.rank, flat[p].shape[1]), flat[p].dtype)}
                     for p, k in zip(self.targets, keys)}
    elif self.kind == 'unstructured':
      out['sparse'] = {p: jnp.zeros((len(idx),), flat[p].dtype)   # a global choice can
                       for p, idx in zip(self.targets, self.entries) if idx}   # skip a matrix
    return out

  def merge(self, frozen: PyTree, trainable: dict) -> PyTree:
    if self.kind == 'full':
      return trainable['all']
    rows = dict(zip(self.targets, self.rows))
    entries = dict(zip(self.targets, self.entries))

    def one(path, w):
      if path in trainable['head']:
        return trainable['head'][path]
      if self.kind == 'row' and path in rows:
        return jnp.asarray(w).at[:, np.asarray(rows[path])].add(trainable['rows'][path].T)
      if self.kind == 'lora' and path in trainable['lora']:
        ab = trainable['lora'][path]
        return w + self.scale * (ab['a'] @ ab['b'])
      if self.kind == 'unstructured' and path in trainable['sparse']:
        flat_w = jnp.asarray(w).reshape(-1)
        return flat_w.at[np.asarray(entries[path])].add(trainable['sparse'][path]).reshape(
            w.shape)
      return w
    return tree_lib.map_with_path(one, frozen)

  def merged_params(self, frozen, trainable):
    """The fine-tuned model as ordinary weights (numpy)."""
    return jax.device_get(self.merge(frozen, trainable))


class Reparametrized:
  """A model whose params are the trainable tree; duck-types Linen's
  init/apply, so the training stack uses it unchanged."""

  def __init__(self, base, method: Method):
    self.base, self.method = base, method

  def init(self, rngs, x, train=False):
    variables = dict(self.base.init(rngs, x, train=train))
    params = variables.pop('params')
    key = rngs['params'] if isinstance(rngs, dict) else rngs
    trainable = self.method.init_trainable(params, key)
    if self.method.kind == 'full':    # nothing frozen: no second copy of the weights
      return {'params': trainable, **variables}
    return {'params': trainable, 'frozen': params, **variables}

  def apply(self, variables, x, train=False, rngs=None, mutable=False):
    variables = dict(variables)
    trainable, frozen = variables.pop('params'), variables.pop('frozen', None)
    full = {'params': self.method.merge(frozen, trainable), **variables}
    kwargs = {'rngs': rngs} if rngs is not None else {}   # NNX-wrapped models take none
    if mutable:
      out, new = self.base.apply(full, x, train=train,
                                 mutable=[m for m in mutable if m != 'frozen'], **kwargs)
      return out, {**dict(new), **({'frozen': frozen} if frozen is not None else {})}
    return self.base.apply(full, x, train=train, **kwargs)


# --- choosing what to train -------------------------------------------------------------

def target_paths(params: PyTree, pattern: str) -> list[str]:
  """2-D kernels whose path matches `pattern`; an error when none does."""
  out = [p for p, x in tree_lib.leaves_with_paths(params)
         if re.search(pattern, p) and len(x.shape) == 2]
  if not out:
    raise SetupError(f'finetune.targets: {pattern!r} matches no 2-D weight; paths look '
                     f'like {[p for p, _ in tree_lib.leaves_with_paths(params)][:6]}')
  return out


def row_scores(kind: str, params, targets, grads=None, input_norms=None, key=None) -> dict:
  """Importance of each output neuron (kernel column) of each target."""
  flat = dict(tree_lib.leaves_with_paths(params))
  g = dict(tree_lib.leaves_with_paths(grads)) if grads is not None else {}
  out = {}
  for i, p in enumerate(targets):
    w = np.asarray(flat[p], np.float32)
    if kind == 'l2':
      out[p] = np.sqrt(np.sum(w * w, axis=0))
    elif kind == 'taylor':
      out[p] = np.sum(np.abs(w * np.asarray(g[p], np.float32)), axis=0)
    elif kind == 'activation':
      out[p] = np.sum(np.abs(w) * np.asarray(input_norms[p], np.float32)[:, None], axis=0)
    elif kind == 'random':
      out[p] = np.asarray(jax.random.uniform(jax.random.fold_in(key, i), (w.shape[1],)))
    else:
      raise SetupError(f'unknown row score {kind!r}; choose from {list(ROW_SCORES)}')
  return out


def choose_rows(scores: dict, rows: int, budget: str) -> dict[str, tuple[int, ...]]:
  """Top rows per matrix, or a global budget of rows x matrices (ties: lowest
  index); an error naming the layer when it has fewer rows than asked."""
  if budget == 'per_layer':
    out = {}
    for p, s in scores.items():
      if rows > len(s):
        raise SetupError(f'finetune.rows: {rows} rows asked, but {p!r} has only {len(s)}')
      keep = np.asarray(select.topk_mask(jnp.asarray(s), rows))
      out[p] = tuple(int(i) for i in np.flatnonzero(keep))
    return out
  total = rows * len(scores)
  if total > sum(len(s) for s in scores.values()):
    raise SetupError(f'finetune.rows: a global budget of {total} rows is more than the '
                     'target matrices have')
  keys = [select.ordered_keys(jnp.asarray(s)) for s in scores.values()]
  masks = select.global_topk_masks(keys, total)
  return {p: tuple(int(i) for i in np.flatnonzero(np.asarray(m)))
          for p, m in zip(scores, masks)}


def memory_bytes(method: Method, params, trainable, opt_state) -> dict:
  """Bytes as allocated for training: parameters (frozen ones too, unless
  everything is trained), int32 row or entry indices, gradients (the size of
  the trainable tree) and optimizer state; works on arrays or shape structs."""
  out = {'bytes_params': (0 if method.kind == 'full' else tree_bytes(params))
                         + tree_bytes(trainable),
         'bytes_indices': 4 * (sum(map(len, method.rows)) + sum(map(len, method.entries))),
         'bytes_grads': tree_bytes(trainable), 'bytes_opt_state': tree_bytes(opt_state)}
  out['bytes_total'] = sum(out.values())
  return out


def trainable_count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def tree_bytes(tree) -> int:
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))
