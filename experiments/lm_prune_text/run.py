"""Causal LM, post-training pruning and retraining, end to end.

A plain script, not a `reproduce.py`: `sparsejax reproduce` runs a sweep or
lottery programs, and this pipeline is a chain of different programs (train,
then prune, then finetune from each pruned workdir). It calls the
`sparsejax` command line, in order, skipping steps whose output exists:

  1. train the dense LM (config.py)                    -> WORKDIR/dense
  2. prune it: magnitude, Wanda, SparseGPT at 50% and 2:4, under
     /usr/bin/time -v (time and peak RSS of each prune command)
                                                         -> WORKDIR/prune_<method>_<target>
  3. retrain with the mask fixed, without and with distillation from the
     dense weights at temperature 2 and 1 (config.py:finetune, :distill,
     :distill_t1)                                         -> WORKDIR/{ft,kd,kd1}_<method>_<target>
  4. write baseline.csv (unigram and dense perplexity), results.csv (every
     number per pruned model), claims.csv (the papers' orderings, judged),
     input_norms.csv and distill_check.csv (diagnostics: see their
     functions) into WORKDIR; with --record also into this folder.

Perplexity is exp(test loss): the test loss is the mean next-byte cross
entropy (nats) over every position of the test split's windows.

  nice -n 15 .venv/bin/python experiments/lm_prune_text/run.py --workdir runs/lm_prune/main
  nice -n 15 .venv/bin/python experiments/lm_prune_text/run.py --workdir runs/lm_prune/main \
      --retrain all --kinds ft --record
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))   # experiments/pipeline_tools.py

from pipeline_tools import parse_time_v, run, slug, sparsejax_bin, write_csv  # noqa: E402
from sparsejax.reproduce import Claim, claims_table  # noqa: E402

CONFIG = HERE / 'config.py'
METHODS = ('magnitude', 'wanda', 'sparsegpt')
TARGETS = {'50%': ['--sparsity', '0.5'], '2:4': ['--nm', '2:4']}


def variant(method: str, target: str) -> list[str]:
  """The recorded SparseGPT 50% prunes used the per-row mask, the default when
  they ran (see the README's "Which SparseGPT"); the flag keeps them remade
  as recorded. 2:4 is chosen per group either way."""
  return ['--per-row'] if (method, target) == ('sparsegpt', '50%') else []
# retrained when --retrain priority (the fallback when 12 fine-tunings
# do not fit the machine)
PRIORITY = (('wanda', '50%'), ('sparsegpt', '2:4'))
# the papers' numbers: WikiText-2 perplexity of LLaMA-2-7B without retraining,
# from the Wanda repository's README (github.com/locuslab/wanda), which
# runs SparseGPT and magnitude in the same protocol
PAPER = {'dense': 5.12, ('magnitude', '50%'): 14.89, ('sparsegpt', '50%'): 6.51,
         ('wanda', '50%'): 6.42, ('magnitude', '2:4'): 54.59, ('sparsegpt', '2:4'): 10.17,
         ('wanda', '2:4'): 11.02}
# retraining variants: plain, distillation at T=2 (the README's example) and at T=1
KINDS = {'ft': 'finetune', 'kd': 'distill', 'kd1': 'distill_t1'}
SGPT_SLACK = 1.02    # SparseGPT's perplexity at most 1.02 x Wanda's
WELL_BELOW = 0.5     # a calibrated method's increase over dense at most half magnitude's


def unigram_test_loss() -> float:
  """Cross entropy (nats) on the test targets of the byte frequencies of the
  train targets (add-one smoothing): the baseline the LM must beat."""
  import numpy as np
  from sparsejax import config as config_lib, experiment
  s = config_lib.to_settings(config_lib.load_config(CONFIG))
  ds = experiment.build_dataset(s.data)
  counts = np.bincount(np.asarray(ds.train.y).ravel(), minlength=256) + 1.0
  logp = np.log(counts / counts.sum())
  return float(-logp[np.asarray(ds.test.y).ravel()].mean())


def final_test_loss(workdir: pathlib.Path) -> float:
  return json.loads((workdir / 'summary.json').read_text())['eval']['test']['loss']


def start_test_loss(workdir: pathlib.Path) -> float | None:
  """The step-0 evaluation of a fine-tuning run (the pruned model)."""
  for line in (workdir / 'metrics.jsonl').read_text().splitlines():
    row = json.loads(line)
    if row.get('kind') == 'eval' and row.get('step') == 0:
      return row['test_loss']
  return None


def train_seconds(workdir: pathlib.Path) -> float:
  return json.loads((workdir / 'summary.json').read_text())['train_seconds_this_process']


def pipeline(root: pathlib.Path, retrain: str, collect: bool, kinds=tuple(KINDS)) -> list[str]:
  """Runs what is missing under `root`; returns the commands it ran."""
  sj, commands = sparsejax_bin(), []
  cfg = str(CONFIG.relative_to(REPO))
  root.mkdir(parents=True, exist_ok=True)
  dense = root / 'dense'
  if not (dense / 'summary.json').exists():
    if collect:
      raise SystemExit(f'no dense run in {dense}; run without --collect')
    run([sj, 'train', '--config', cfg, '--workdir', str(dense)], root / 'dense.log', commands)
  timer = ['/usr/bin/time', '-v', '-o'] if pathlib.Path('/usr/bin/time').exists() else None
  if timer is None:
    raise SystemExit('/usr/bin/time is missing: it measures the prune commands')
  for method in METHODS:
    for target, flag in TARGETS.items():
      out = root / f'prune_{slug(method, target)}'
      if (out / 'prune.json').exists() and (root / f'{out.name}.time').exists():
        continue
      if collect:
        raise SystemExit(f'no prune in {out}; run without --collect')
      run([*timer, str(root / f'{out.name}.time'), sj, 'prune', '--config', f'{cfg}:prune',
           '--workdir', str(out), '--method', method, *flag, *variant(method, target),
           '--from', str(dense)],
          root / f'{out.name}.log', commands)
  rest = [(m, t) for m in METHODS for t in TARGETS if (m, t) not in PRIORITY]
  todo = list(PRIORITY) if retrain == 'priority' else [*PRIORITY, *rest]
  if retrain == 'none':
    todo = []
  for method, target in todo:
    pruned = root / f'prune_{slug(method, target)}'
    for kind in kinds:
      out = root / f'{kind}_{slug(method, target)}'
      if (out / 'summary.json').exists() or collect:
        continue
      run([sj, 'finetune', '--config', f'{cfg}:{KINDS[kind]}', '--workdir', str(out),
           f'--config.finetune.init_from={pruned}'], root / f'{out.name}.log', commands)
  return commands


def rows_of(root: pathlib.Path) -> tuple[dict, list[dict]]:
  dense_loss = final_test_loss(root / 'dense')
  uni = unigram_test_loss()
  base = {'dense_test_loss': dense_loss, 'dense_ppl': math.exp(dense_loss),
          'unigram_test_loss': uni, 'unigram_ppl': math.exp(uni),
          'dense_train_steps': json.loads((root / 'dense' / 'summary.json').read_text())[
              'final_step'],
          'dense_train_seconds': train_seconds(root / 'dense')}
  rows = []
  for method in METHODS:
    for target in TARGETS:
      name = slug(method, target)
      pruned = root / f'prune_{name}'
      report = json.loads((pruned / 'prune.json').read_text())['report']
      layers = report['layers']
      kept = sum((1 - l['sparsity']) * l['shape'][0] * l['shape'][1] for l in layers)
      total = sum(l['shape'][0] * l['shape'][1] for l in layers)
      loss = report['eval']['pruned']['test']['loss']
      row = {'method': method, 'target': target,
             'calibration_tokens': int(report['calibration_tokens']),
             'pruned_matrices': len(layers), 'block_density': kept / total,
             'dense_test_loss_check': report['eval']['dense']['test']['loss'],
             'pruned_test_loss': loss, 'pruned_ppl': math.exp(loss),
             'ppl_increase': math.exp(loss) - base['dense_ppl'],
             'mean_relative_error': sum(l['relative_error'] for l in layers) / len(layers),
             'prune_seconds': report['wall_seconds'],
             **parse_time_v(root / f'prune_{name}.time')}
      for kind in KINDS:
        run_dir = root / f'{kind}_{name}'
        if (run_dir / 'summary.json').exists():
          ft_loss = final_test_loss(run_dir)
          row[f'{kind}_start_test_loss'] = start_test_loss(run_dir)
          row[f'{kind}_test_loss'] = ft_loss
          row[f'{kind}_ppl'] = math.exp(ft_loss)
          row[f'{kind}_steps'] = json.loads((run_dir / 'summary.json').read_text())['final_step']
          row[f'{kind}_train_seconds'] = train_seconds(run_dir)
      rows.append(row)
  mag = {r['target']: r['ppl_increase'] for r in rows if r['method'] == 'magnitude'}
  for r in rows:
    r['increase_over_magnitude_increase'] = r['ppl_increase'] / mag[r['target']]
  return base, rows


def input_norm_spread(root: pathlib.Path, calibration: int = 128) -> list[dict]:
  """Per prunable Dense of the dense model: how unequal the norms ||X_j||_2 of
  its input features are over the calibration examples that `sparsejax
  prune` uses (the same first `calibration` train examples, dense inputs).
  Wanda's score differs from magnitude's only by these norms (and, when
  unstructured, by comparing per output neuron): with equal norms and N:M
  groups the two masks are identical. Large language models have a few
  input features with norms far above the rest (the outliers Wanda's paper
  builds on); max / median shows whether this small model has them."""
  import flax.linen as nn
  import numpy as np
  from sparsejax import config as config_lib, experiment
  from sparsejax.data import base as data_base
  from sparsejax.train import weights as weights_lib
  s = config_lib.to_settings(config_lib.load_config(f'{CONFIG}:prune'))
  ds = experiment.build_dataset(s.data)
  model = experiment.build_model(s.model, ds)
  params, _, _ = weights_lib.final_weights(root / 'dense')
  size = min(s.data.batch_size, calibration)
  sq: dict = {}

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == '__call__':
      path = '/'.join(context.module.path)
      if path.startswith('block_'):
        x = np.asarray(args[0], np.float64).reshape(-1, args[0].shape[-1])
        sq[path] = sq.get(path, 0.0) + np.sum(x * x, axis=0)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    for i in range(-(-calibration // size)):
      idx = data_base.batch_indices(len(ds.train), size, s.seed, i)[:calibration - i * size]
      model.apply({'params': params}, ds.train.get(idx)[0], train=False)
  rows = []
  for path, v in sq.items():
    norms = np.sqrt(v)
    rows.append({'layer': f'{path}/kernel', 'inputs': len(norms),
                 'max_over_median': float(norms.max() / np.median(norms)),
                 'coefficient_of_variation': float(norms.std() / norms.mean())})
  return rows


def distill_check(root: pathlib.Path) -> list[dict]:
  """For each retrained model: whether the distillation runs' recorded
  teacher is the dense run's final weights (the sha256 fingerprint that
  config.json records), and, on the test split, each model's cross entropy
  and its KL divergence from the dense model at T=2 and T=1 (per position,
  mean): did distillation move the student towards the teacher?"""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from sparsejax import config as config_lib, experiment, prune_run
  from sparsejax.train import distill, weights as weights_lib
  s = config_lib.to_settings(config_lib.load_config(f'{CONFIG}:prune'))
  ds = experiment.build_dataset(s.data)
  model = experiment.build_model(s.model, ds)
  dense = weights_lib.final_weights(root / 'dense')[0]
  fingerprint = distill.fingerprint({'params': dense, 'model_state': {}})
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
  x, y = ds.test.get(np.arange(len(ds.test)))
  teacher = apply(dense, x)
  out = []
  for method in METHODS:
    for target in TARGETS:
      name = slug(method, target)
      models = {'pruned': prune_run.load_pruned(root / f'prune_{name}')[0]}
      for kind in KINDS:
        if (root / f'{kind}_{name}' / 'summary.json').exists():
          models[kind] = weights_lib.final_weights(root / f'{kind}_{name}')[0]
      if len(models) == 1:
        continue
      for kind, params in models.items():
        logits = apply(params, x)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1)
        row = {'method': method, 'target': target, 'model': kind,
               'test_loss': float(jnp.mean(ce)),
               'kl_from_dense_t2': float(jnp.mean(distill.kd_loss(logits, teacher, 2.0))) / 4,
               'kl_from_dense_t1': float(jnp.mean(distill.kd_loss(logits, teacher, 1.0)))}
        if kind.startswith('kd'):
          recorded = json.loads((root / f'{kind}_{name}' / 'config.json').read_text())
          row['teacher_is_dense'] = _find(recorded, 'distill')['teacher'] == fingerprint
        out.append(row)
  return out


def _find(tree, key):
  """The innermost dict under `key` whose 'teacher' is a fingerprint (the
  resolved settings that config.json records beside the raw config)."""
  found = None
  if isinstance(tree, dict):
    for k, v in tree.items():
      if k == key and isinstance(v, dict) and v.get('teacher') not in (None, 'start'):
        found = v
      elif isinstance(v, dict):
        found = _find(v, key) or found
  return found


def claims(base: dict, rows: list[dict]) -> list[Claim]:
  by = {(r['method'], r['target']): r for r in rows}
  out = [Claim('dense LM: test perplexity below the unigram (byte frequency) baseline', '-',
               f"{base['dense_ppl']:.2f} vs {base['unigram_ppl']:.2f}", 'below',
               base['dense_ppl'] < base['unigram_ppl'])]
  for target in TARGETS:
    sg, wa, mag = (by[(m, target)] for m in ('sparsegpt', 'wanda', 'magnitude'))
    p = {m: PAPER[(m, target)] for m in METHODS}
    out.append(Claim(
        f'{target}, no retraining: SparseGPT perplexity at most Wanda\'s',
        f"{p['sparsegpt']:.2f} vs {p['wanda']:.2f}",
        f"{sg['pruned_ppl']:.2f} vs {wa['pruned_ppl']:.2f}",
        f'SparseGPT <= {SGPT_SLACK} x Wanda', sg['pruned_ppl'] <= SGPT_SLACK * wa['pruned_ppl']))
    for m, r in (('Wanda', wa), ('SparseGPT', sg)):
      key = m.lower()
      ratio = (p[key] - PAPER['dense']) / (p['magnitude'] - PAPER['dense'])
      out.append(Claim(
          f'{target}, no retraining: {m} well below magnitude (perplexity increase over '
          'dense, as a fraction of magnitude\'s)',
          f"+{p[key] - PAPER['dense']:.2f} vs +{p['magnitude'] - PAPER['dense']:.2f} "
          f'({ratio:.2f})',
          f"+{r['ppl_increase']:.2f} vs +{mag['ppl_increase']:.2f} "
          f"({r['increase_over_magnitude_increase']:.2f})",
          f'<= {WELL_BELOW}', r['increase_over_magnitude_increase'] <= WELL_BELOW))
  for target in TARGETS:
    done = [by[(m, target)] for m in ('sparsegpt', 'wanda', 'magnitude')]
    if all('ft_ppl' in r for r in done):
      out.append(Claim(
          f'{target}, after {done[0]["ft_steps"]} steps of retraining without distillation: '
          'SparseGPT / Wanda / magnitude perplexity (beside)', '-',
          ' / '.join(f"{r['ft_ppl']:.2f}" for r in done)
          + f" (spread {max(r['ft_ppl'] for r in done) - min(r['ft_ppl'] for r in done):.2f})",
          '-', None))
  for r in rows:
    if any(f'{k}_ppl' in r for k in KINDS):
      out.append(Claim(
          f"{r['method']} {r['target']}: perplexity pruned -> retrained without / with "
          'distillation at T=2 / at T=1 (beside)', '-',
          f"{r['pruned_ppl']:.2f} -> " + ' / '.join(
              f"{r[f'{k}_ppl']:.2f}" if f'{k}_ppl' in r else 'not run' for k in KINDS),
          '-', None))
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--retrain', choices=('priority', 'all', 'none'), default='priority',
                  help="which pruned models to retrain: 'priority' = Wanda 50%% and "
                       "SparseGPT 2:4 (default), 'all' = all six")
  ap.add_argument('--kinds', default=','.join(KINDS),
                  help=f'retraining variants to run, of {list(KINDS)} (default all)')
  ap.add_argument('--collect', action='store_true', help='run nothing; only gather')
  ap.add_argument('--record', action='store_true',
                  help="also write the CSV files into this experiment's folder")
  args = ap.parse_args(argv)
  root = pathlib.Path(args.workdir).absolute()
  start = time.perf_counter()
  kinds = [k for k in args.kinds.split(',') if k]
  if not kinds or set(kinds) - set(KINDS):
    ap.error(f'--kinds takes a comma-separated subset of {list(KINDS)}')
  commands = pipeline(root, args.retrain, args.collect, kinds)
  if commands:
    with open(root / 'commands.txt', 'a') as f:
      f.write(''.join(c + '\n' for c in commands))
  base, rows = rows_of(root)
  found = claims(base, rows)
  files = {'baseline.csv': [base], 'results.csv': rows,
           'input_norms.csv': input_norm_spread(root),
           'distill_check.csv': distill_check(root),
           'claims.csv': [{'claim': c.claim, 'paper': c.paper, 'ours': c.ours,
                           'tolerance': c.tolerance, 'verdict': c.verdict} for c in found]}
  for name, content in files.items():
    write_csv(root / name, content)
    if args.record:
      shutil.copy(root / name, HERE / name)
  print(claims_table(found))
  print(f'\n{time.perf_counter() - start:.0f} s; CSV files in {root}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
