"""The benchmark suite: one command, one table of ratios measured in this run.

  python benchmarks/bench_suite.py [--rounds 10]

1. Train step, masked over dense (jitted, Adam): a fixed 90% mask, gradual
   pruning and RigL with a mask update every 100 steps (amortised: every
   timed window of 100 steps holds one update), for LeNet-300-100 (batch
   128, MNIST-sized inputs) and a small Transformer encoder (MNIST-1D
   sequences, batch 100). Variants alternate window by window.
2. IMP level overhead: one lottery level (prune what remains, rewind, start
   a new run) against the same training run started directly.
3. Sparse export and inference (LeNet-300-100): size on disk of the CSR
   export against the dense file at 90%, 95% and 99% sparsity (and of the
   packed 2:4 export at 50%); the exported CSR model (Dense layers as
   sparse-dense products, jax.experimental.sparse) against the dense model,
   batch 1 and 128, outputs checked equal (1e-4).
4. Memory of parameter-efficient fine-tuning on all-MiniLM-L6-v2's 36
   matrices, for row-based (8 rows), LoRA (rank 4, the same trainable
   count), unstructured (the same count: K deltas at K int32 indices) and
   full fine-tuning: bytes of the training state (gradients + Adam state +
   indices), and of everything (frozen params + trainable + that state);
   ratios against row-based.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparsejax as sj  # noqa: E402
from sparsejax import config as config_lib, experiment, models  # noqa: E402
from sparsejax.core import select, tree as tree_lib  # noqa: E402
from sparsejax.programs import export as export_lib, export_formats, peft  # noqa: E402

WINDOW = 100


def _median_windows(fns: dict, rounds: int) -> dict:
  """Median seconds per call of each fn over `rounds` interleaved windows."""
  times = {k: [] for k in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      times[name].append(fn())
  return {k: statistics.median(v) for k, v in times.items()}


def _step_windows(model, x, y, schedules, rounds):
  params = models.init_variables(model, jax.random.key(0), x.shape[1:], x.dtype)['params']

  def loss(p):
    logits = model.apply({'params': p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  runners = {}
  for name, schedule in schedules.items():
    tx = sj.sparsify(optax.adam(1e-3), schedule) if schedule else optax.adam(1e-3)
    own = jax.tree.map(jnp.copy, params)          # each runner donates its own buffers
    state = [own, tx.init(own)]

    @functools.partial(jax.jit, donate_argnums=(0, 1))   # as the training loop's step does
    def step(p, s, tx=tx):
      g = jax.grad(loss)(p)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    def window(step=step, state=state):
      t0 = time.perf_counter()
      for _ in range(WINDOW):
        state[0], state[1] = step(state[0], state[1])
      jax.block_until_ready(state[0])
      return (time.perf_counter() - t0) / WINDOW
    window()   # compile and warm up (and move past step 0)
    runners[name] = window
  return _median_windows(runners, rounds)


def train_step_ratios(rounds):
  s = 0.9
  big = 10 ** 9
  schedules = {
      'dense': None,
      'fixed 90%': sj.make_schedule('fixed', masks=None),
      'gradual (every 100)': sj.make_schedule('gradual', sparsity=s, start=0, end=big,
                                              every=WINDOW),
      'rigl (every 100)': sj.make_schedule('rigl', sparsity=s, end=big, every=WINDOW),
  }
  rows = []
  x = jnp.asarray(np.random.default_rng(0).random((128, 28, 28, 1), np.float32))
  y = jnp.asarray(np.random.default_rng(1).integers(0, 10, 128))
  lenet = models.get_model('lenet300_100')
  fixed = sj.prune(models.init_variables(lenet, jax.random.key(0), (28, 28, 1))['params'],
                   s)[1]
  schedules['fixed 90%'] = sj.make_schedule('fixed', masks=fixed)
  res = _step_windows(lenet, x, y, schedules, rounds)
  rows += [('LeNet-300-100, batch 128', k, v, v / res['dense']) for k, v in res.items()]
  tf = models.get_model('transformer_encoder', d_model=64, num_layers=2, mlp_dim=128)
  x = jnp.asarray(np.random.default_rng(2).random((100, 40), np.float32))
  y = jnp.asarray(np.random.default_rng(3).integers(0, 10, 100))
  params = models.init_variables(tf, jax.random.key(0), (40,))['params']
  schedules['fixed 90%'] = sj.make_schedule('fixed', masks=sj.prune(params, s)[1])
  res = _step_windows(tf, x, y, schedules, rounds)
  rows += [('Transformer encoder (2x64), batch 100', k, v, v / res['dense'])
           for k, v in res.items()]
  return rows


def imp_level_overhead(tmp):
  """Wall time of a lottery level over a plain run of the same length."""
  base = config_lib.apply_overrides(config_lib.load_config(ROOT / 'configs' / 'mnist1d_mlp.py'), {
      'train.steps': 1500, 'train.eval_every': 1500, 'train.checkpoint_every': 1500,
      'lottery.levels': 1, 'lottery.prune_fraction': 0.2})
  t0 = time.perf_counter()
  experiment.run_lottery(base, pathlib.Path(tmp) / 'lot', log=lambda s: None)
  both = time.perf_counter() - t0
  t0 = time.perf_counter()
  experiment.train_and_evaluate(base, pathlib.Path(tmp) / 'plain', progress=False)
  plain = time.perf_counter() - t0
  level = both - plain   # level 0 is a plain run; the rest is level 1
  return [('IMP, MNIST-1D MLP, 1500 steps a level', 'plain run (s)', plain, 1.0),
          ('IMP, MNIST-1D MLP, 1500 steps a level', 'lottery level (s)', level, level / plain)]


def sparse_inference(rounds, tmp):
  rows = []
  model = models.get_model('lenet300_100')
  params = models.init_variables(model, jax.random.key(0), (28, 28, 1))['params']
  dense_apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  nm_pruned, nm_masks = sj.prune(params, 0.5, pattern=select.NM(2, 4))
  size = export_formats.write_export(nm_pruned, {}, nm_masks, 'nm', pathlib.Path(tmp) / 'exp_nm')
  rows.append(('export size on disk, 2:4 (50% sparse)', 'packed 2:4 file / dense file',
               size['bytes_on_disk'] / 2 ** 20, size['ratio']))
  for s in (0.9, 0.95, 0.99):
    pruned, masks = sj.prune(params, s)
    d = pathlib.Path(tmp) / f'exp_{s}'
    size = export_formats.write_export(pruned, {}, masks, 'csr', d)
    rows.append((f'export size on disk, {100 * s:.0f}% sparse', 'CSR file / dense file',
                 size['bytes_on_disk'] / 2 ** 20, size['ratio']))
    sparse_params, _ = export_lib.load(d, as_sparse=True)
    sparse_fn = jax.jit(lambda p, x: export_lib.sparse_apply(model.apply, p, x))
    for batch in (1, 128):
      x = jnp.asarray(np.random.default_rng(batch).random((batch, 28, 28, 1), np.float32))
      want = dense_apply(pruned, x)
      got = sparse_fn(sparse_params, x)
      assert float(jnp.max(jnp.abs(got - want))) < 1e-4

      def timer(fn, p):
        def run():
          t0 = time.perf_counter()
          for _ in range(200):
            out = fn(p, x)
          jax.block_until_ready(out)
          return (time.perf_counter() - t0) / 200
        run()
        return run
      res = _median_windows({'dense': timer(dense_apply, pruned),
                             'sparse': timer(sparse_fn, sparse_params)}, rounds)
      rows.append((f'inference, {100 * s:.0f}% sparse, batch {batch}', 'sparse CSR / dense',
                   res['sparse'], res['sparse'] / res['dense']))
  return rows


def peft_memory():
  from sparsejax.models import bert
  model = bert.BertEncoder(num_classes=8)
  abstract = jax.eval_shape(lambda k: models.init_variables(model, k, (32,), jnp.int32),
                            jax.random.key(0))['params']
  targets = peft.target_paths(abstract, r'layer_\d+/(attention/(query|key|value|out)|mlp/fc_(in|out))/kernel')
  head = tuple(p for p, _ in tree_lib.leaves_with_paths(abstract) if p.startswith('output/'))
  shapes = dict(tree_lib.leaves_with_paths(abstract))
  rows_k = 8
  entries = []
  for p in targets:   # any K positions will do for counting: the first r*d_in of each matrix
    entries.append(tuple(range(rows_k * shapes[p].shape[0])))
  methods = {
      'row (8 rows)': peft.Method('row', tuple(targets), head,
                                  rows=tuple(tuple(range(rows_k)) for _ in targets)),
      'lora (rank 4)': peft.Method('lora', tuple(targets), head, rank=4),
      'unstructured (same count)': peft.Method('unstructured', tuple(targets), head,
                                               entries=tuple(entries)),
      'full': peft.Method('full'),
  }
  out, base = [], None
  for name, m in methods.items():
    trainable = jax.eval_shape(lambda p, m=m: m.init_trainable(p, jax.random.key(0)), abstract)
    opt = jax.eval_shape(optax.adam(1e-3).init, trainable)
    b = peft.memory_bytes(m, abstract, trainable, opt)
    state = b['bytes_grads'] + b['bytes_opt_state'] + b['bytes_indices']
    total = b['bytes_total']
    base = base or (state, total)
    count = peft.trainable_count(trainable) - (
        0 if m.kind == 'full' else sum(int(np.prod(shapes[p].shape)) for p in head))
    label = f'PEFT memory, MiniLM ({count:,} trainable)'
    out.append((label + ', grads+Adam+indices MiB', name, state / 2 ** 20, state / base[0]))
    out.append((label + ', all params+state MiB', name, total / 2 ** 20, total / base[1]))
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rounds', type=int, default=10)
  args = parser.parse_args(argv)
  print(f'sparsejax benchmark suite; {platform.machine()}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__}, backend {jax.default_backend()}')
  t0 = time.perf_counter()
  rows = train_step_ratios(args.rounds)
  with tempfile.TemporaryDirectory() as tmp:
    rows += imp_level_overhead(tmp)
    rows += sparse_inference(args.rounds, tmp)
  rows += peft_memory()
  print('\n| benchmark | variant | value | ratio |')
  print('|---|---|---|---|')
  for what, variant, value, ratio in rows:
    unit = ('MiB' if 'memory' in what or 'size' in what else
            'ms/call' if 'inference' in what else 'ms/step' if 'batch' in what else 's')
    shown = value * 1000 if unit.startswith('ms') else value
    print(f'| {what} | {variant} | {shown:.3f} {unit} | {ratio:.3f}x |')
  print(f'\nratios: against the first variant of each benchmark (dense step, plain run, '
        f'dense inference, row-based memory); {time.perf_counter() - t0:.0f} s in all')
  return 0


if __name__ == '__main__':
  sys.exit(main())
