"""What the parameter-efficient methods are: their settings, the trainable
trees and how they merge into full params (row deltas, LoRA factors, K
individual weights, everything), the model that trains them, and row scores
(Li & Bhaskara 2025; Hu et al. 2022; Ansell et al. 2022). `peft` runs them.

A "row" is one output neuron: a column of a Dense kernel (d_in, d_out), or
one output channel of a Conv kernel (kh, kw, c_in, c_out), i.e. the
kh*kw*c_in weights that feed it; its delta has the kernel's shape without the
last axis, so the row method trains (r, d_in) or (r, kh, kw, c_in) per target.

Training (`Reparametrized`) computes a row or LoRA delta of a Linen nn.Dense
target as an extra term of that layer's output (`peft_forward`), so its
gradient never forms the (d_in, d_out) cotangent of the whole kernel; every
other case (unstructured, full, Conv kernels, NNX-wrapped and non-Linen
models, kernels no plain nn.Dense multiplies) merges the delta into the
weights (`Method.merge`) and differentiates through them: see `peft_forward`
for the cases and why. `Method.merged_params` is always the merged weights.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import select, tree as tree_lib
from sparsejax.programs import peft_forward
from sparsejax.train import task as task_lib
from sparsejax.train.task import SetupError

PyTree = Any


# --- settings ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  init_from: str         # a sparsejax workdir or checkpoint, or a .npz / .safetensors file
  method: str            # 'masked', 'row', 'lora', 'unstructured', 'full'
  targets: str           # regex: the weight matrices the PEFT methods adapt
  head: str              # regex: params trained in full by every method (a new head)
  rows: int              # row method: rows (output neurons / channels) per target kernel
  rank: int              # lora: rank per target matrix
  alpha: float           # lora: scale alpha / rank; 0 means alpha = rank
  budget: str            # row method: 'per_layer' (rows each) or 'global' (rows x layers)
  row_score: str         # 'l2', 'taylor', 'structural', 'activation', 'random'
  score_batches: int     # batches for the taylor / structural / activation scores and
                         # gradient selection
  select: str            # unstructured: 'delta' (LT-SFT) or 'gradient'
  dense_steps: int       # unstructured 'delta': steps of the dense phase
  trainable: int         # unstructured: trainable weights; 0 = the row method's count


FINETUNE_METHODS = ('masked', 'row', 'lora', 'unstructured', 'full')
ROW_SCORES = ('l2', 'taylor', 'random', 'activation', 'structural')
NOTHING_PRUNABLE = tree_lib.PrunableRule(include='(?!)')   # PEFT runs keep no masks


# --- methods: trainable trees and how they merge into full params -----------------

@dataclasses.dataclass(frozen=True)
class Method:
  """Static description of what is trained; `merge` is pure and jit-safe."""
  kind: str                                   # 'row', 'lora', 'unstructured', 'full'
  targets: tuple[str, ...] = ()               # adapted kernel paths
  head: tuple[str, ...] = ()                  # paths trained in full
  rows: tuple[tuple[int, ...], ...] = ()      # row method: output indices (last axis)
  entries: tuple[tuple[int, ...], ...] = ()   # unstructured: flat indices per target
  rank: int = 0
  scale: float = 1.0                          # lora: alpha / rank

  def init_trainable(self, params: PyTree, key) -> dict:
    flat = dict(tree_lib.leaves_with_paths(params))
    out = {'head': {p: jnp.asarray(flat[p]) for p in self.head}}
    if self.kind == 'full':
      return {'all': params}
    if self.kind == 'row':
      out['rows'] = {p: jnp.zeros((len(idx), *flat[p].shape[:-1]), flat[p].dtype)
                     for p, idx in zip(self.targets, self.rows)}
    elif self.kind == 'lora':
      keys = jax.random.split(key, max(len(self.targets), 1))
      out['lora'] = {p: {'a': jax.random.normal(k, (fan_in(flat[p]), self.rank), flat[p].dtype)
                              / np.sqrt(fan_in(flat[p])),
                         'b': jnp.zeros((self.rank, flat[p].shape[-1]), flat[p].dtype)}
                     for p, k in zip(self.targets, keys)}   # a conv kernel: as (kh*kw*c_in, c_out)
    elif self.kind == 'unstructured':
      out['sparse'] = {p: jnp.zeros((len(idx),), flat[p].dtype)   # a global choice can
                       for p, idx in zip(self.targets, self.entries) if idx}   # skip a matrix
    return out

  def merge(self, frozen: PyTree, trainable: dict, skip=frozenset()) -> PyTree:
    """The full params; targets in `skip` stay frozen (their deltas are added
    in the forward pass instead: `peft_forward`)."""
    if self.kind == 'full':
      return trainable['all']
    rows = dict(zip(self.targets, self.rows))
    entries = dict(zip(self.targets, self.entries))

    def one(path, w):
      if path in trainable['head']:
        return trainable['head'][path]
      if path in skip:
        return w
      if self.kind == 'row' and path in rows:
        return add_rows(w, rows[path], trainable['rows'][path])
      if self.kind == 'lora' and path in trainable['lora']:
        ab = trainable['lora'][path]
        return w + self.scale * (ab['a'] @ ab['b']).reshape(w.shape)
      if self.kind == 'unstructured' and path in trainable['sparse']:
        flat_w = jnp.asarray(w).reshape(-1)
        return flat_w.at[np.asarray(entries[path])].add(trainable['sparse'][path]).reshape(
            w.shape)
      return w
    return tree_lib.map_with_path(one, frozen)

  def merged_params(self, frozen, trainable):
    """The fine-tuned model as ordinary weights (numpy)."""
    return jax.device_get(self.merge(frozen, trainable))


def add_rows(w, idx, delta):
  """w with `delta` (r, *w.shape[:-1]) added at output indices `idx` of its
  last axis: Dense columns or Conv output channels (for a 2-D kernel the same
  as w.at[:, idx].add(delta.T))."""
  return jnp.asarray(w).at[..., np.asarray(idx)].add(jnp.moveaxis(delta, 0, -1))


def fan_in(w) -> int:
  """Weights per row (output neuron): d_in, or kh*kw*c_in for a conv kernel."""
  return int(np.prod(w.shape[:-1]))


class Reparametrized:
  """A model whose params are the trainable tree; duck-types Linen's
  init/apply, so the training stack uses it unchanged. `base` is a Linen
  module or any model with Linen-style init/apply (an `nnx_model`): `train`
  and `rngs` reach it only where its call takes them, as `Task` passes them.
  Row and LoRA deltas of Linen nn.Dense targets are terms of the forward pass
  (`peft_forward`); `forward=False` merges every target (the reference)."""

  def __init__(self, base, method: Method, forward: bool = True):
    check_base(base, method.kind)
    self.base, self.method, self.forward = base, method, forward
    self._train = bool(task_lib.train_kwarg(base, False))
    self._rngs = task_lib.takes(base.apply, 'rngs')
    self._merged_anyway: set[str] = set()   # targets no plain nn.Dense multiplied

  def init(self, rngs, x, train=False):
    variables = dict(self.base.init(rngs, x, **({'train': train} if self._train else {})))
    params = variables.pop('params')
    key = rngs['params'] if isinstance(rngs, dict) else rngs
    trainable = self.method.init_trainable(params, key)
    if self.method.kind == 'full':    # nothing frozen: no second copy of the weights
      return {'params': trainable, **variables}
    return {'params': trainable, 'frozen': params, **variables}

  def apply(self, variables, x, train=False, rngs=None, mutable=False):
    others = dict(variables)
    trainable, frozen = others.pop('params'), others.pop('frozen', None)
    terms = (peft_forward.forward_targets(self.base, self.method, frozen)
             - self._merged_anyway) if self.forward else frozenset()
    full = {'params': self.method.merge(frozen, trainable, skip=terms), **others}
    kwargs = {'train': train} if self._train else {}
    if rngs is not None and self._rngs:   # NNX-wrapped models take none
      kwargs['rngs'] = rngs
    kept = {'frozen': frozen} if frozen is not None else {}
    rest = [m for m in (mutable or ()) if m != 'frozen']
    with peft_forward.extra_terms(self.method, trainable, terms) as reached:
      if rest:
        out, new = self.base.apply(full, x, mutable=rest, **kwargs)
        out = out, {**dict(new), **kept}
      else:
        out = self.base.apply(full, x, **kwargs)   # nothing of the base's is mutable
        out = (out, kept) if mutable else out
    if terms - reached:   # not multiplied by a plain nn.Dense: merge those, trace again
      self._merged_anyway |= terms - reached
      return self.apply(variables, x, train=train, rngs=rngs, mutable=mutable)
    return out


def check_base(model, method: str) -> None:
  """Refuses a task without a model: every method trains a reparametrised
  model, and a task's own whole-objective loss cannot be reparametrised."""
  if model is None:
    raise SetupError(f'finetune.method {method!r} reparametrises the task\'s model, but the '
                     'task has none (only init and loss): give it a model')


# --- choosing what to train -------------------------------------------------------------

def target_paths(params: PyTree, pattern: str) -> list[str]:
  """Dense (2-D) and Conv (4-D, kh kw c_in c_out) kernels whose path matches
  `pattern`; an error when none does."""
  out = [p for p, x in tree_lib.leaves_with_paths(params)
         if re.search(pattern, p) and len(x.shape) in (2, 4)]
  if not out:
    raise SetupError(f'finetune.targets: {pattern!r} matches no 2-D (Dense) or 4-D (Conv) '
                     f'kernel; paths look like '
                     f'{[p for p, _ in tree_lib.leaves_with_paths(params)][:6]}')
  return out


def bias_path(flat: dict, path: str) -> str | None:
  """The bias beside kernel `path` (one entry per output neuron), if any."""
  b = path.rsplit('/', 1)[0] + '/bias' if '/' in path else 'bias'
  ok = b in flat and tuple(flat[b].shape) == tuple(flat[path].shape[-1:])
  return b if ok else None


def structural_importance(w, g, b=None, gb=None) -> np.ndarray:
  """One batch's group first-order Taylor importance of every output neuron,
  (sum over its weights of w * dL/dw, plus b * dL/db)^2: the squared
  first-order change in loss from removing the neuron (Molchanov et al.
  2019, "Importance Estimation for Neural Network Pruning": the group
  Taylor-FO criterion, the group being the neuron's kernel weights and bias,
  which equals their gate criterion (dL/dgate)^2 for a gate on the neuron's
  pre-activation; summed over batches by the caller. LLM-Pruner's vector-wise
  importance, Ma et al. 2023, is its absolute value). Unlike 'taylor', signs
  inside a neuron cancel. Li & Bhaskara 2025 name "the structural pruning
  method" as their score; its exact formula is not confirmed here."""
  w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
  s = np.sum((w * g).reshape(-1, w.shape[-1]), axis=0)
  if b is not None:
    s = s + np.asarray(b, np.float64) * np.asarray(gb, np.float64)
  return s * s


def row_scores(kind: str, params, targets, grads=None, input_norms=None, key=None) -> dict:
  """Importance of each output neuron (last axis: kernel column or conv
  output channel) of each target. 'taylor' and 'structural' read one batch's
  `grads`; `input_norms` are per input feature (Dense) or channel (Conv)."""
  flat = dict(tree_lib.leaves_with_paths(params))
  g = dict(tree_lib.leaves_with_paths(grads)) if grads is not None else {}
  out = {}
  for i, p in enumerate(targets):
    w = np.asarray(flat[p], np.float32)
    rows = lambda a: a.reshape(-1, w.shape[-1])    # (weights per row, rows)
    if kind == 'l2':
      out[p] = np.sqrt(np.sum(rows(w * w), axis=0))
    elif kind == 'taylor':
      out[p] = np.sum(rows(np.abs(w * np.asarray(g[p], np.float32))), axis=0)
    elif kind == 'structural':
      b = bias_path(flat, p)
      out[p] = structural_importance(w, g[p], *((flat[b], g[b]) if b else ()))
    elif kind == 'activation':
      norms = np.asarray(input_norms[p], np.float32).reshape((1,) * (w.ndim - 2) + (-1, 1))
      out[p] = np.sum(rows(np.abs(w) * norms), axis=0)
    elif kind == 'random':
      out[p] = np.asarray(jax.random.uniform(jax.random.fold_in(key, i), (w.shape[-1],)))
    else:
      raise SetupError(f'finetune.row_score: unknown row score {kind!r}; choose from '
                       f'{list(ROW_SCORES)}')
  return out


# Jitted (compiled once per score length): called eagerly, select.topk_mask traces and
# compiles its lax.fori_loop / lax.cond bodies afresh on every call (new
# closures), and JAX's caches keep every one of those executables: about
# 4-7 MiB of host memory and 1-2 s per call, so ~1 GB held through training
# after choosing rows in the 210 matrices of SmolLM2-135M. Same selection.
_topk_mask = jax.jit(select.topk_mask)


def choose_rows(scores: dict, rows: int, budget: str) -> dict[str, tuple[int, ...]]:
  """Top rows per kernel, or a global budget of rows x kernels (ties: lowest
  index); an error naming the layer when it has fewer rows than asked."""
  if budget == 'per_layer':
    out = {}
    for p, s in scores.items():
      if rows > len(s):
        raise SetupError(f'finetune.rows: {rows} rows asked, but {p!r} has only {len(s)}')
      keep = np.asarray(_topk_mask(jnp.asarray(s), rows))
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
