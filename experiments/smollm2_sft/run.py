"""Sparse fine-tuning of SmolLM2-135M-Instruct on kjv-books: row-based (rows
chosen by L2 norm, or by the structural score), LoRA, unstructured sparse
and full fine-tuning over 3 seeds, at matched trainable parameters (full is
the unmatched ceiling); per-example test predictions, measured memory and
time, paired intervals and the claims. Setting and claims: claims.md (fixed
before the runs).

Each run (arm x seed, seed 0 of every arm first) is two commands, skipped
when their output exists, so the script resumes where it stopped (a
fine-tuning stopped midway resumes from its last checkpoint):

  1. /usr/bin/time -v sparsejax finetune --config configs/smollm2_sft.py
       --workdir W/<arm>_s<seed> --no-progress --config.seed=<seed> <the arm's keys>
       --config.train.eval_splits="('validation',)"
     (peak RSS and wall time of the whole command; done when row.json exists:
     the command writes it last, after summary.json and merged.npz)
  2. python experiments/smollm2_sft/predict.py ... --weights W/<run>/merged.npz
       --out W/<run>/test_predictions.npz   (the test split, once, per example)

then the run's checkpoints and merged.npz (each a full copy of the model) are
deleted unless --keep. `--override KEY=VALUE` (repeatable) adds
--config.KEY=VALUE to both commands: the way to point them at another model
(model.options.pretrained, finetune.init_from, data.options.tokenizer) or
shorten them (train.steps) for a smoke run.

  nice -n 10 .venv/bin/python experiments/smollm2_sft/run.py --workdir runs/smollm2_sft
  .venv/bin/python experiments/smollm2_sft/run.py --workdir runs/smollm2_sft --collect --record

Before the runs, the model before fine-tuning predicts the test split once
(W/pretrained/test_predictions.npz: the zero-shot accuracy).

--collect only summarizes what exists; --record writes results/sft.csv (one
row per run) and results/sft_claims.csv (the comparisons and verdicts) here,
or under --results, and keeps each finished run's row and per-example
correctness in <results>/sft_runs/<run>.npz (a few kB): run folders do not
outlive a session, and collecting reads a run from there when its folder is
gone, so the claims can pool seeds run in different sessions.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # experiments/pipeline_tools.py

from pipeline_tools import (load_run, merge_csv, parse_time_v, refuse_to_lose,  # noqa: E402
                            run, save_run, sparsejax_bin)

CONFIG = 'configs/smollm2_sft.py'
SEEDS = (0, 1, 2)
# arm -> config keys. Rows: 8 per matrix (config); LoRA rank 4; unstructured:
# as many single weights as the row arm trains (finetune.trainable 0 counts
# them with the cheap L2 rows), chosen by accumulated |gradient|.
ARMS = {
    'row-structural': {'finetune.method': 'row', 'finetune.row_score': 'structural'},
    'row-l2': {'finetune.method': 'row', 'finetune.row_score': 'l2'},
    'lora': {'finetune.method': 'lora'},
    'unstructured': {'finetune.method': 'unstructured', 'finetune.row_score': 'l2'},
    'full': {'finetune.method': 'full', 'optimizer.learning_rate': 5e-5},
}
PRETRAINED = 'pretrained'   # the model before fine-tuning: test predictions only
RUN_KEYS = {'train.eval_splits': "('validation',)"}   # the test split: predict.py, once
ROWS = ('row-structural', 'row-l2')
BOOTSTRAP = 10_000
ACCURACY_MARGIN = 1.0     # points: row-based no more than this below LoRA
MEMORY_VS_LORA = 1.05     # row peak <= this x LoRA's
MEMORY_VS_UNSTRUCTURED = 0.80
MATCH_TOLERANCE = 0.025   # LoRA's trainable count within 2.5% of the row arm's


def run_name(arm: str, seed: int) -> str:
  return f'{arm}_s{seed}'


def plan(arms, seeds) -> list[tuple[str, int]]:
  """(arm, seed), seed-major: a partial run has every arm once."""
  return [(arm, seed) for seed in seeds for arm in arms]


def config_args(arm: str, seed: int, overrides: dict[str, str]) -> list[str]:
  """The --config.KEY=VALUE arguments of one run (overrides last, so they win)."""
  keys = {'seed': str(seed), **{k: str(v) for k, v in ARMS[arm].items()}, **RUN_KEYS,
          **overrides}
  return [f'--config.{k}={v}' for k, v in keys.items()]


def pipeline(root: pathlib.Path, arms, seeds, overrides: dict[str, str], keep: bool,
             zero_shot: bool = True) -> None:
  sj = sparsejax_bin()
  root.mkdir(parents=True, exist_ok=True)
  before = root / PRETRAINED / 'test_predictions.npz'
  if zero_shot and not before.exists():    # the model before fine-tuning, once
    before.parent.mkdir(exist_ok=True)
    run([sys.executable, str(HERE / 'predict.py'), '--config', CONFIG, '--weights',
         overrides.get('finetune.init_from', 'smollm2'), '--out', str(before),
         *[f'--config.{k}={v}' for k, v in overrides.items()]],
        root / f'{PRETRAINED}.predict.log')
  for arm, seed in plan(arms, seeds):
    out = root / run_name(arm, seed)
    timing = root / f'{out.name}.time'
    keys = config_args(arm, seed, overrides)
    if not (out / 'row.json').exists():
      run(['/usr/bin/time', '-v', '-o', str(timing), sj, 'finetune', '--config', CONFIG,
           '--workdir', str(out), '--no-progress', *keys], root / f'{out.name}.log')
    predictions = out / 'test_predictions.npz'
    if not predictions.exists():
      run([sys.executable, str(HERE / 'predict.py'), '--config', CONFIG, '--weights',
           str(out / 'merged.npz'), '--out', str(predictions), *keys],
          root / f'{out.name}.predict.log')
    if not keep:
      shutil.rmtree(out / 'checkpoints', ignore_errors=True)
      (out / 'merged.npz').unlink(missing_ok=True)


# --- collecting --------------------------------------------------------------------------

def start_validation(workdir: pathlib.Path) -> float | None:
  """Validation accuracy at step 0 (the model before fine-tuning)."""
  path = workdir / 'metrics.jsonl'
  rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
  return next((r.get('validation_accuracy') for r in rows
               if r.get('kind') == 'eval' and r.get('step') == 0), None)


def run_row(root: pathlib.Path, arm: str, seed: int) -> tuple[dict, np.ndarray] | None:
  """(the CSV row, per-example correctness) of a finished run, else None."""
  out = root / run_name(arm, seed)
  pred_path = out / 'test_predictions.npz'
  if not ((out / 'row.json').exists() and pred_path.exists()):
    return None
  row = json.loads((out / 'row.json').read_text())
  summary = json.loads((out / 'summary.json').read_text())
  info = row['peft']
  with np.load(pred_path) as f:
    pred = {k: f[k] for k in f.files}
  correct = (pred['pred'] == pred['label']).astype(np.float64)
  timing = root / f'{out.name}.time'
  command = parse_time_v(timing) if timing.exists() else {}
  validation = summary['eval'].get('validation', {})
  state = info['bytes_grads'] + info['bytes_opt_state'] + info['bytes_indices']
  return {
      'arm': arm, 'method': info['method'], 'seed': seed,
      'trainable_params': info['trainable_params'], 'total_params': info['total_params'],
      'trainable_pct': round(100 * info['trainable_params'] / info['total_params'], 4),
      'test_accuracy': float(correct.mean()),
      'test_accuracy_books': float(np.mean(pred['pred_books'] == pred['label'])),
      'test_nll': float(pred['nll'].mean()), 'test_examples': int(correct.size),
      'validation_accuracy': validation.get('accuracy'),
      'validation_accuracy_start': start_validation(out),
      'peak_rss_train_mib': info.get('peak_rss_train_mb'),
      'peak_rss_train_reset': info.get('peak_rss_train_reset'),
      'peak_rss_train_settled': info.get('peak_rss_train_settled'),
      'peak_rss_process_mib': info.get('peak_rss_mb'),
      'peak_rss_command_mib': command.get('peak_rss_mib'),
      'peak_device_bytes': info.get('peak_device_bytes'),
      'ms_per_step': info.get('ms_per_step'),
      'train_seconds': summary.get('train_seconds_this_process'),
      'command_wall_s': command.get('command_wall_s'),
      'predict_seconds': float(pred['seconds']),
      'resumed_from': summary.get('resumed_from'),
      'state_bytes_counted': state,
  }, correct


def collect(root: pathlib.Path, arms, seeds, kept: pathlib.Path | None = None
            ) -> tuple[list[dict], dict, list[str]]:
  """(rows, per-example correctness by (arm, seed), names of the runs read
  from their folders). A run whose folder is gone is read from `kept`
  (results/sft_runs) when it was recorded there."""
  rows, correct, fresh = [], {}, []
  for arm, seed in plan(arms, seeds):
    got = run_row(root, arm, seed)
    if got is not None:
      fresh.append(run_name(arm, seed))
    elif kept is not None and (old := load_run(kept, run_name(arm, seed))) is not None:
      got = (old[1], old[0]['correct'].astype(np.float64))
    if got is not None:
      rows.append(got[0])
      correct[(arm, seed)] = got[1]
  before = root / PRETRAINED / 'test_predictions.npz'
  if before.exists():
    with np.load(before) as f:
      rows.append({'arm': PRETRAINED, 'method': 'none', 'trainable_params': 0,
                   'test_accuracy': float(np.mean(f['pred'] == f['label'])),
                   'test_accuracy_books': float(np.mean(f['pred_books'] == f['label'])),
                   'test_nll': float(f['nll'].mean()), 'test_examples': int(f['label'].size),
                   'predict_seconds': float(f['seconds'])})
      fresh.append(PRETRAINED)
      correct[PRETRAINED] = (f['pred'] == f['label']).astype(np.float64)
  elif kept is not None and (old := load_run(kept, PRETRAINED)) is not None:
    rows.append(old[1])
  return rows, correct, fresh


# --- comparisons and claims ----------------------------------------------------------------

def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = BOOTSTRAP, seed: int = 0
                     ) -> tuple[float, float, float]:
  """(mean, 2.5%, 97.5%) in points of the accuracy difference a - b, where a
  and b are (seeds, examples) 0/1 correctness on the same test examples:
  examples are resampled with their seeds kept together (percentile
  interval), so the pairing of each verse across methods and seeds is kept."""
  d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean(axis=0)
  rng = np.random.default_rng(seed)
  means = np.empty(n)
  for lo in range(0, n, 500):
    hi = min(n, lo + 500)
    means[lo:hi] = d[rng.integers(0, d.size, (hi - lo, d.size))].mean(axis=1)
  low, high = np.percentile(means, [2.5, 97.5])
  return 100 * float(d.mean()), 100 * float(low), 100 * float(high)


def non_inferiority(low: float, high: float, margin: float) -> str:
  """'pass' when the interval lies above -margin, 'fail' when wholly below."""
  if low >= -margin:
    return 'pass'
  return 'fail' if high < -margin else 'inconclusive'


def seed_mean(rows: list[dict], arm: str, key: str) -> float | None:
  vals = [r[key] for r in rows if r['arm'] == arm and r.get(key) is not None]
  return float(np.mean(vals)) if vals else None


def claims(rows: list[dict], correct: dict, seeds, n: int = BOOTSTRAP) -> list[dict]:
  """The comparisons of claims.md, each with its rule and verdict; a
  comparison whose runs are not all there is left out."""
  out = []
  done = lambda arm: all((arm, s) in correct for s in seeds)
  by_seed = lambda arm, key: {r['seed']: r.get(key) for r in rows if r['arm'] == arm}
  stack = lambda arm: np.stack([correct[(arm, s)] for s in seeds])

  def accuracy(claim, a, b, rule=None):
    if not (done(a) and done(b)):
      return
    mean, low, high = paired_bootstrap(stack(a), stack(b), n)
    verdict = non_inferiority(low, high, ACCURACY_MARGIN) if rule else 'reported'
    out.append({'claim': claim, 'a': a, 'b': b,
                'quantity': 'test accuracy a - b (points), pooled over seeds',
                'value': round(mean, 3), 'ci_low': round(low, 3), 'ci_high': round(high, 3),
                'rule': rule or '', 'verdict': verdict})

  def ratio(claim, a, b, key, limit, primary):
    if not (done(a) and done(b)):
      return
    ma, mb = seed_mean(rows, a, key), seed_mean(rows, b, key)
    pa, pb = by_seed(a, key), by_seed(b, key)
    per_seed = [pa[s] / pb[s] for s in seeds if pa.get(s) and pb.get(s)]
    if ma is None or mb is None:
      return
    value = ma / mb
    verdict = 'pass' if value <= limit else 'fail'
    if per_seed and min(per_seed) <= limit < max(per_seed):
      verdict += ' (within noise: the seeds fall on both sides)'
    out.append({'claim': claim, 'a': a, 'b': b,
                'quantity': f'mean {key} a / mean {key} b; range: per-seed ratios',
                'value': round(value, 4), 'ci_low': round(min(per_seed), 4),
                'ci_high': round(max(per_seed), 4),
                'rule': f'<= {limit}' + ('' if primary else ' (secondary measure)'),
                'verdict': verdict})

  for arm in ROWS:
    accuracy('C1 accuracy: row within 1 point of LoRA', arm, 'lora',
             f'95% CI lower bound >= -{ACCURACY_MARGIN:g} (fail: upper bound < '
             f'-{ACCURACY_MARGIN:g}; else inconclusive)')
  for arm in ROWS:
    ratio('C2 memory: row <= 1.05 x LoRA', arm, 'lora', 'peak_rss_train_mib',
          MEMORY_VS_LORA, True)
    ratio('C3 memory: row <= 0.8 x unstructured', arm, 'unstructured', 'peak_rss_train_mib',
          MEMORY_VS_UNSTRUCTURED, True)
    ratio('C2 memory: row <= 1.05 x LoRA', arm, 'lora', 'peak_rss_command_mib',
          MEMORY_VS_LORA, False)
    ratio('C3 memory: row <= 0.8 x unstructured', arm, 'unstructured', 'peak_rss_command_mib',
          MEMORY_VS_UNSTRUCTURED, False)
  for arm in ROWS:
    accuracy('D1 accuracy: row vs unstructured', arm, 'unstructured')
    accuracy('D2 accuracy: row vs full fine-tuning', arm, 'full')
    for b in ('lora', 'unstructured'):
      ratio_row = {'claim': 'D3 time per step', 'a': arm, 'b': b}
      ma, mb = seed_mean(rows, arm, 'ms_per_step'), seed_mean(rows, b, 'ms_per_step')
      if done(arm) and done(b) and ma and mb:
        out.append({**ratio_row, 'quantity': 'mean ms_per_step a / mean ms_per_step b',
                    'value': round(ma / mb, 4), 'ci_low': '', 'ci_high': '', 'rule': '',
                    'verdict': 'reported'})
  accuracy('D4 accuracy: structural vs L2 row scores', 'row-structural', 'row-l2')
  accuracy('D2 accuracy: LoRA vs full fine-tuning', 'lora', 'full')
  matched = matching(rows)
  if any(m['verdict'] != 'pass' for m in matched):    # claims.md: M is a precondition
    for c in out:
      if c['claim'].startswith('C'):
        c['verdict'] = f"not judged: budgets not matched (was {c['verdict']})"
  return out + matched


def matching(rows: list[dict]) -> list[dict]:
  """The trainable counts the comparisons rest on: unstructured trains exactly
  the row arms' count, LoRA within MATCH_TOLERANCE of it (every seed the
  same count)."""
  count = lambda arm: {r['trainable_params'] for r in rows if r['arm'] == arm}
  rows_n = count('row-l2') | count('row-structural')
  out = []
  for arm, tolerance in (('unstructured', 0.0), ('lora', MATCH_TOLERANCE)):
    if not rows_n or not count(arm):
      continue
    rel = [other / base - 1 for other in count(arm) for base in rows_n]
    worst = max(rel, key=abs)
    ok = len(rows_n) == 1 and len(count(arm)) == 1 and abs(worst) <= tolerance
    out.append({'claim': 'M matched trainable parameters', 'a': arm, 'b': 'row',
                'quantity': 'trainable params a / row - 1 (the largest over runs)',
                'value': round(worst, 5), 'ci_low': '', 'ci_high': '',
                'rule': f'|value| <= {tolerance:g}, one count per arm',
                'verdict': 'pass' if ok else 'fail'})
  return out


def summary_table(rows: list[dict]) -> list[dict]:
  """Per arm: means (and ranges) over seeds, for the printout."""
  out = []
  for arm in dict.fromkeys(r['arm'] for r in rows if r['arm'] != PRETRAINED):
    mine = [r for r in rows if r['arm'] == arm]
    acc = [100 * r['test_accuracy'] for r in mine]
    out.append({'arm': arm, 'seeds': len(mine), 'trainable_params': mine[0]['trainable_params'],
                'test_acc_mean': round(float(np.mean(acc)), 2),
                'test_acc_min': round(min(acc), 2), 'test_acc_max': round(max(acc), 2),
                **{k: seed_mean(mine, arm, k) for k in (
                    'peak_rss_train_mib', 'peak_rss_command_mib', 'ms_per_step',
                    'train_seconds')}})
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', required=True, type=pathlib.Path)
  p.add_argument('--seeds', type=int, nargs='+', default=list(SEEDS))
  p.add_argument('--arms', nargs='+', default=list(ARMS), choices=list(ARMS))
  p.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                 help='--config.KEY=VALUE for every command (repeatable)')
  p.add_argument('--collect', action='store_true', help='run nothing: summarize what exists')
  p.add_argument('--record', action='store_true', help='write sft.csv and sft_claims.csv')
  p.add_argument('--results', type=pathlib.Path, default=HERE / 'results')
  p.add_argument('--keep', action='store_true', help="keep checkpoints and merged.npz")
  p.add_argument('--bootstrap', type=int, default=BOOTSTRAP)
  p.add_argument('--no-zero-shot', action='store_true',
                 help='skip the test predictions of the model before fine-tuning')
  args = p.parse_args(argv)
  overrides = {}
  for item in args.override:
    key, eq, value = item.partition('=')
    if not eq:
      raise SystemExit(f'--override {item!r}: give KEY=VALUE')
    overrides[key] = value
  args.workdir = args.workdir.absolute()
  if not args.collect:
    pipeline(args.workdir, args.arms, args.seeds, overrides, args.keep,
             zero_shot=not args.no_zero_shot)
  kept = args.results / 'sft_runs'
  rows, correct, fresh = collect(args.workdir, args.arms, args.seeds, kept)
  before = correct.pop(PRETRAINED, None)
  for r in summary_table(rows):
    print(r)
  found = claims(rows, correct, args.seeds, args.bootstrap)
  for c in found:
    print(f"{c['claim']}: {c['a']} vs {c['b']}: {c['value']} [{c['ci_low']}, {c['ci_high']}] "
          f"{c['verdict']}")
  if args.record:
    args.results.mkdir(parents=True, exist_ok=True)
    refuse_to_lose(args.results / 'sft.csv', ('arm', 'seed'),
                   {(a, str(s)) for a, s in plan(args.arms, args.seeds)},
                   {(a, str(s)) for a, s in correct})
    by_name = {r['arm'] if r['arm'] == PRETRAINED else run_name(r['arm'], r['seed']): r
               for r in rows}
    vectors = {PRETRAINED: before, **{run_name(*k): v for k, v in correct.items()}}
    for name in fresh:
      save_run(kept, name, {'correct': vectors[name].astype(np.uint8)}, by_name[name])
    merge_csv(args.results / 'sft.csv', rows, ('arm', 'seed'))
    merge_csv(args.results / 'sft_claims.csv', found, ('claim', 'a', 'b', 'quantity'))
  return 0


if __name__ == '__main__':
  sys.exit(main())
