"""Parameter-efficient fine-tuning: row-based sparse fine-tuning against LoRA,
unstructured sparse fine-tuning and full fine-tuning, at matched budgets.

Row-based sparse fine-tuning (Li & Bhaskara 2025, arXiv 2502.11439): score
every output neuron (a row of the PyTorch-layout weight, a column of a Flax
kernel) of each target matrix with a structural-pruning importance (L2 norm,
first-order Taylor |w*g| summed over the row, activation-aware |W|*||X||,
or random as the control), keep the top r, and train only a delta of shape
(r, d_in) per matrix, added at those rows to the frozen weights. The delta
starts at zero, so step 0 is the pretrained model; gradients and optimizer
state exist only for the deltas; at the end they merge into plain weights.

Baselines on the same matrices: LoRA (Hu et al. 2022; W + (alpha/r) A B, B
zero-initialised), unstructured sparse fine-tuning of K individual weights
chosen by the magnitude of change after a short dense phase (LT-SFT, Ansell
et al. 2022) or by gradient magnitude, trained as a K-vector of deltas
scattered at their flat indices (so its gradient and Adam state are K-sized
too, plus K int32 indices that the row method does not need), and full
fine-tuning.
Params matching `finetune.head` (a new task head) are trained in full and
freshly initialised by every method.

Every method is the ordinary training stack with a reparametrised model
whose `params` are only the trainable tree; the frozen weights ride along as
the 'frozen' variable collection (never differentiated, never in the
optimizer).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import resource
import statistics
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import config as config_lib
from sparsejax.core import select, tree as tree_lib
from sparsejax.programs import results as results_lib
from sparsejax.train import loop, metrics as metrics_lib

PyTree = Any


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
    if mutable:
      out, new = self.base.apply(full, x, train=train, rngs=rngs,
                                 mutable=[m for m in mutable if m != 'frozen'])
      return out, {**dict(new), **({'frozen': frozen} if frozen is not None else {})}
    return self.base.apply(full, x, train=train, rngs=rngs)


# --- choosing what to train -------------------------------------------------------------

def target_paths(params: PyTree, pattern: str) -> list[str]:
  """2-D kernels whose path matches `pattern`; an error when none does."""
  out = [p for p, x in tree_lib.leaves_with_paths(params)
         if re.search(pattern, p) and len(x.shape) == 2]
  if not out:
    raise config_lib.ConfigError(f"config key 'finetune.targets': {pattern!r} matches no "
                                 f'2-D weight; paths look like '
                                 f'{[p for p, _ in tree_lib.leaves_with_paths(params)][:6]}')
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
      raise config_lib.ConfigError(f'unknown row score {kind!r}')
  return out


def choose_rows(scores: dict, rows: int, budget: str) -> dict[str, tuple[int, ...]]:
  """Top rows per matrix, or a global budget of rows x matrices (ties: lowest
  index); an error naming the layer when it has fewer rows than asked."""
  if budget == 'per_layer':
    out = {}
    for p, s in scores.items():
      if rows > len(s):
        raise config_lib.ConfigError(f"config key 'finetune.rows': {rows} rows asked, but "
                                     f'{p!r} has only {len(s)}')
      keep = np.asarray(select.topk_mask(jnp.asarray(s), rows))
      out[p] = tuple(int(i) for i in np.flatnonzero(keep))
    return out
  total = rows * len(scores)
  if total > sum(len(s) for s in scores.values()):
    raise config_lib.ConfigError(f"config key 'finetune.rows': a global budget of {total} "
                                 'rows is more than the target matrices have')
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


# --- the program --------------------------------------------------------------------------

def run_peft(config, workdir, *, progress: bool = False) -> dict:
  """Builds the method from `finetune.*`, trains it, returns the result row
  with its budget and memory figures."""
  from sparsejax.programs import peft_select   # scores that need data and gradients
  settings = config_lib.to_settings(config)
  f = settings.finetune
  dense_cfg = config_lib.apply_overrides(config, {'pruning.schedule': 'dense', 'sparsity': 0.0})
  base_run = loop.build(config_lib.to_settings(dense_cfg))
  fresh = jax.device_get(loop.initial_state(base_run).params)
  params, model_state = peft_select.load_pretrained(f, base_run, fresh)
  head = tuple(p for p, _ in tree_lib.leaves_with_paths(params)
               if f.head and re.search(f.head, p))
  targets = tuple(p for p in target_paths(params, f.targets) if p not in head)
  method = peft_select.build_method(settings, config, workdir, base_run, params, model_state,
                                    targets, head)
  key = jax.random.fold_in(jax.random.key(settings.seed), 11)
  trainable0 = jax.device_get(method.init_trainable(params, key))
  run_cfg = config_lib.apply_overrides(config, {
      'pruning.schedule': 'dense', 'sparsity': 0.0, 'pruning.include': peft_select.NOTHING,
      'train.eval_at_start': True})
  frozen = {} if method.kind == 'full' else {'frozen': params}
  start = loop.Start(trainable0, None, {**frozen, **(model_state or {})})
  loop.train_and_evaluate(run_cfg, workdir, progress=progress, start=start,
                          wrap_model=lambda base: Reparametrized(base, method))
  rows = metrics_lib.read_rows(pathlib.Path(workdir) / 'metrics.jsonl')
  rates = [r['steps_per_sec'] for r in rows if 'steps_per_sec' in r][1:]
  final = _final_state(workdir)
  info = {'method': f.method, 'trainable_params': trainable_count(trainable0),
          'total_params': trainable_count(params),
          **memory_bytes(method, params, trainable0, final['opt_state']),
          'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          'ms_per_step': 1000 / statistics.median(rates) if rates else None,
          'targets': len(targets), 'rows': [len(r) for r in method.rows] or None}
  row = results_lib.run_row(workdir, seed=settings.seed, arm=f.method)
  row['peft'] = info
  save_merged(workdir, method, final)
  return row


def save_merged(workdir, method: Method, state=None) -> pathlib.Path:
  """Writes the fine-tuned model as ordinary weights, `merged.npz` (keys are
  leaf paths, loadable by finetune.init_from), and the method as `peft.json`;
  `state` is the run's final state (read from its checkpoint when None)."""
  workdir = pathlib.Path(workdir)
  state = state if state is not None else _final_state(workdir)
  frozen = state['model_state'].get('frozen') if method.kind != 'full' else None
  merged = method.merged_params(frozen, state['params'])
  arrays = {f'params/{p}': np.asarray(x) for p, x in tree_lib.leaves_with_paths(merged)}
  rest = {k: v for k, v in (state.get('model_state') or {}).items() if k != 'frozen'}
  arrays.update({f'model_state/{p}': np.asarray(x)
                 for p, x in tree_lib.leaves_with_paths(rest)})
  path = workdir / 'merged.npz'
  np.savez(path, **arrays)
  (workdir / 'peft.json').write_text(json.dumps(dataclasses.asdict(method)) + '\n')
  return path


def _final_state(workdir):
  """The run's latest checkpoint as numpy arrays."""
  from sparsejax.train import checkpoint as ckpt_lib, inspection
  return ckpt_lib.restore_raw(inspection.resolve(workdir))
