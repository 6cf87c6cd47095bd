"""The `sparsejax` command line.

  sparsejax train   --config FILE --workdir DIR [--config.KEY=VALUE ...]
  sparsejax eval    --workdir DIR [--split test] [--step N] [--per-example FILE.npz]
  sparsejax inspect DIR_OR_CHECKPOINT
  sparsejax lottery --config FILE --workdir DIR [--config.KEY=VALUE ...]
  sparsejax finetune --config FILE --workdir DIR [--config.KEY=VALUE ...]
  sparsejax prune   --config FILE --workdir DIR --method magnitude|wanda|sparsegpt
                    (--sparsity S | --nm N:M) [--calibration N] [--from WEIGHTS]
                    [--owl [--owl-m M] [--owl-lambda L]] [--per-row]
  sparsejax sweep   --config FILE --workdir DIR [--jobs N] [--index I]
                    [--collect | --count | --list]
  sparsejax export  DIR [--format csr|nm|ell|dense] [--safetensors] [--out DIR]
  sparsejax export  DIR --hf OUT_DIR
  sparsejax export  DIR --peft-delta [--layout sparsejax|peft] [--safetensors] [--out DIR]
                    [--base WEIGHTS]
  sparsejax merge   DELTA --out FILE.npz|FILE.safetensors [--base WEIGHTS]
  sparsejax report  DIR [DIR ...] [--out DIR] [--metric test_accuracy]
  sparsejax reproduce NAME --workdir DIR [--jobs N] [--collect]
  sparsejax perplexity --model smollm2|FILE.gguf|HF_DIR [--weights DIR]
                    [--text FILE | --corpus eval|calibration] [--seqlen 256]
                    [--max-windows N] [--batch B] [--out FILE.jsonl] [--save-nll F.npz]
  sparsejax generate --model ... [--weights DIR] --prompt TEXT
                    [--max-new-tokens N] [--temperature T] [--seed S]

`train` resumes when DIR already holds a checkpoint of the same config.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys


def _version() -> str:
  """'sparsejax X (jax Y, jaxlib Y, flax Z, optax W)'."""
  from importlib import metadata
  import sparsejax
  parts = []
  for dist in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'):
    try:
      parts.append(f'{dist} {metadata.version(dist)}')
    except metadata.PackageNotFoundError:
      parts.append(f'{dist} not installed')
  return f"sparsejax {sparsejax.__version__} ({', '.join(parts)})"


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='sparsejax', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--version', action='version', version=_version())
  sub = parser.add_subparsers(dest='command', required=True)
  cfg = sub.add_parser('config', help="a config's every key with its value and default")
  cfg.add_argument('--show', required=True, metavar='FILE', help='the config file')
  train = sub.add_parser('train', help='train (or resume) a run from a config file')
  train.add_argument('--config', required=True, help='Python file with get_config()')
  train.add_argument('--workdir', required=True, help='where checkpoints and metrics go')
  train.add_argument('--no-progress', action='store_true', help='no progress bar')
  train.add_argument('--coordinator', default=None,
                     help='host:port of process 0, for a multi-process run '
                     '(jax.distributed.initialize); omit on TPU pods and SLURM, where '
                     'JAX finds it itself with --distributed')
  train.add_argument('--num-processes', type=int, default=None)
  train.add_argument('--process-id', type=int, default=None)
  train.add_argument('--distributed', action='store_true',
                     help='call jax.distributed.initialize() with settings from the cluster')
  ev = sub.add_parser('eval', help="evaluate a run's latest (or a given) checkpoint")
  ev.add_argument('--workdir', required=True)
  ev.add_argument('--split', action='append', help='test, validation or train (repeatable)')
  ev.add_argument('--step', type=int, default=None)
  ev.add_argument('--per-example', metavar='FILE.npz', default=None,
                  help="also write each example's loss and accuracy (for paired intervals)")
  ins = sub.add_parser('inspect', help='per-layer table of a checkpoint')
  ins.add_argument('path', help='a workdir, its checkpoints folder or a step folder')
  lot = sub.add_parser('lottery', help='iterative magnitude pruning as levels, with controls')
  lot.add_argument('--config', required=True)
  lot.add_argument('--workdir', required=True)
  lot.add_argument('--progress', action='store_true', help='progress bars for each run')
  ft = sub.add_parser('finetune', help='prune trained weights and recover, or fine-tune a '
                      'small part of them (row-based, LoRA, unstructured, full)')
  ft.add_argument('--config', required=True)
  ft.add_argument('--workdir', required=True)
  ft.add_argument('--no-progress', action='store_true')
  pr = sub.add_parser('prune', help='post-training pruning from calibration batches, layer by '
                      'layer (magnitude, Wanda, SparseGPT), unstructured or N:M')
  pr.add_argument('--config', required=True)
  pr.add_argument('--workdir', required=True, help='where the pruned checkpoint goes')
  pr.add_argument('--method', required=True, choices=('magnitude', 'wanda', 'sparsegpt'))
  target = pr.add_mutually_exclusive_group(required=True)
  target.add_argument('--sparsity', type=float, help='unstructured, e.g. 0.5')
  target.add_argument('--nm', help='N:M pattern along the inputs, e.g. 2:4')
  pr.add_argument('--calibration', type=int, default=128,
                  help='calibration examples from the train split')
  pr.add_argument('--from', dest='init_from', default=None,
                  help='weights to prune (default: finetune.init_from of the config)')
  pr.add_argument('--percdamp', type=float, default=None, help='SparseGPT dampening (0.01)')
  pr.add_argument('--blocksize', type=int, default=None, help='SparseGPT block size (128)')
  pr.add_argument('--per-row', action='store_true',
                  help="SparseGPT unstructured: the same count per output neuron in every "
                       "block (default: the paper's joint choice over each block)")
  pr.add_argument('--owl', action='store_true',
                  help='per-block unstructured sparsities from outlier ratios (OWL, Yin et '
                       'al. 2024), averaging --sparsity')
  pr.add_argument('--owl-m', type=float, default=None, help='OWL outlier multiple M (5)')
  pr.add_argument('--owl-lambda', type=float, default=None,
                  help='OWL half range lambda (0.08)')
  pr.add_argument('--no-eval', action='store_true',
                  help='skip evaluating the dense and pruned weights on the test split')
  sw = sub.add_parser('sweep', help="run every point of a config's get_sweep() as a process")
  sw.add_argument('--config', required=True)
  sw.add_argument('--workdir', required=True)
  sw.add_argument('--jobs', type=int, default=1, help='points run at the same time')
  sw.add_argument('--index', default=None,
                  help='run only point I, 0 to count-1 (one process per point on a cluster; '
                  'default: $SLURM_ARRAY_TASK_ID when set, so a job array task runs its own)')
  only = sw.add_mutually_exclusive_group()
  only.add_argument('--collect', action='store_true',
                    help='run nothing: gather the finished points into the report')
  only.add_argument('--count', action='store_true',
                    help='run nothing: print the number of points (size a job array with it)')
  only.add_argument('--list', action='store_true',
                    help='run nothing: print each point\'s index, status (done, failed, '
                    'todo), run directory and overrides, one line each')
  sw.add_argument('--metric', default='test_accuracy')
  ex = sub.add_parser('export', help='strip the masks into a compact sparse checkpoint, or '
                      'write a Llama as a Hugging Face folder, or a PEFT run\'s delta')
  ex.add_argument('path', help="a run's or a `sparsejax prune` workdir")
  ex.add_argument('--format', default=None, choices=('csr', 'nm', 'ell', 'dense'),
                  help='csr (default), nm, ell: the masked matrices compact; dense: every '
                  'weight, pruned zeros and masks included, as a weights file that '
                  'finetune.init_from and prune --from read')
  ex.add_argument('--safetensors', action='store_true',
                  help='weights.safetensors instead of weights.npz (same array names); with '
                  '--peft-delta, delta.safetensors')
  ex.add_argument('--out', default=None)
  ex.add_argument('--hf', default=None, metavar='OUT_DIR',
                  help="a 'llama' run's model as a Hugging Face folder (model.safetensors, "
                  'config.json, tokenizer.json of model.options.pretrained, '
                  'generation_config.json) that transformers and perplexity --model load')
  ex.add_argument('--peft-delta', action='store_true',
                  help='of a PEFT run, write only what was trained (row deltas and indices, '
                  'LoRA factors, the head) and a reference (path, sha256) to its base weights')
  ex.add_argument('--layout', default=None, choices=('sparsejax', 'peft'),
                  help="with --peft-delta: sparsejax (default, every method) or peft: a LoRA "
                  "run as the PEFT library's adapter_model.safetensors + adapter_config.json")
  ex.add_argument('--base', default=None,
                  help='with --peft-delta: the base weights (default: finetune.init_from)')
  mg = sub.add_parser('merge', help='apply a PEFT delta (export --peft-delta, either layout) '
                      'to its base weights and write the full model as .npz or .safetensors')
  mg.add_argument('delta', help='a folder written by export --peft-delta')
  mg.add_argument('--out', required=True, help='the .npz or .safetensors to write (by suffix)')
  mg.add_argument('--base', default=None,
                  help="the base weights (default: the path in the delta's manifest)")
  rep = sub.add_parser('report', help='tables and plots of lottery or sweep results')
  rep.add_argument('dirs', nargs='+', help='run directories holding results.jsonl')
  rep.add_argument('--out', default=None, help='where to write (default: the first dir)')
  rep.add_argument('--metric', default='test_accuracy',
                   help="e.g. test_accuracy, validation_loss, early_stop_test_accuracy")
  rp = sub.add_parser('reproduce', help='run one experiments/ folder end to end and print '
                      "the paper's numbers against ours")
  rp.add_argument('name', help='an experiments/ folder with a reproduce.py')
  rp.add_argument('--workdir', required=True)
  rp.add_argument('--jobs', type=int, default=1)
  rp.add_argument('--collect', action='store_true', help='run nothing: gather and judge')
  for name, what in (('perplexity', 'perplexity of a pretrained LM in the pruning papers\' '
                      'protocol (non-overlapping windows)'),
                     ('generate', 'continue a prompt with a pretrained LM (KV cache)')):
    lm = sub.add_parser(name, help=what)
    lm.add_argument('--model', required=True, help='smollm2, a .gguf file or a Hugging Face '
                    'folder (config.json + model.safetensors + tokenizer.json)')
    lm.add_argument('--weights', default=None, help="weights of --model's architecture to run "
                    'instead: a sparsejax run or prune workdir, or a folder written by save_hf '
                    "(with --model's tokenizer if it has none)")
  ppl = sub.choices['perplexity']
  source = ppl.add_mutually_exclusive_group()
  source.add_argument('--text', default=None, help='a UTF-8 text file')
  source.add_argument('--corpus', default=None, choices=('eval', 'calibration'),
                      help='a part of the built-in King James Bible corpus (default: eval)')
  ppl.add_argument('--seqlen', type=int, default=256, help='window length in tokens (256)')
  ppl.add_argument('--max-windows', type=int, default=None,
                   help='run N windows spread evenly over the text (default: all)')
  ppl.add_argument('--batch', type=int, default=1, help='windows per run (1)')
  ppl.add_argument('--out', default=None, help='append the result as a JSON line')
  ppl.add_argument('--save-nll', default=None, help='write per-token NLLs and windows (.npz)')
  gen = sub.choices['generate']
  gen.add_argument('--prompt', required=True)
  gen.add_argument('--max-new-tokens', type=int, default=64)
  gen.add_argument('--temperature', type=float, default=0.0, help='0: greedy')
  gen.add_argument('--seed', type=int, default=0)
  return parser


def _lottery(args, overrides) -> int:
  from sparsejax import config as config_lib, experiment
  from sparsejax.programs import report
  config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides)
  experiment.run_lottery(config, args.workdir, progress=args.progress)
  print()
  print(report.report(experiment.lottery_dir(config, args.workdir)))
  return 0


def _finetune(args, overrides) -> int:
  from sparsejax import config as config_lib, experiment
  config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides)
  row = experiment.run_finetune(config, args.workdir, progress=not args.no_progress)
  import json
  import pathlib
  (pathlib.Path(args.workdir) / 'row.json').write_text(json.dumps(row, default=float) + '\n')
  lines = ['| stage | ' + ' | '.join(sorted(row['final'])) + ' |',
           '|---|' + '---|' * len(row['final'])]
  if row.get('after_pruning'):
    lines.append('| after pruning, before fine-tuning | ' + ' | '.join(
        f"{row['after_pruning'].get(k, float('nan')):.4f}" for k in sorted(row['final'])) + ' |')
  lines.append('| after fine-tuning | ' + ' | '.join(
      f"{row['final'][k]:.4f}" for k in sorted(row['final'])) + ' |')
  print('\n'.join(lines))
  if 'peft' in row:
    print()
    for k, v in row['peft'].items():
      print(f'{k}: {v}')
  else:
    print(f"\nweights kept: {100 * row['density']:.2f}% of the prunable weights")
  return 0


def _prune(args, overrides) -> int:
  from sparsejax import config as config_lib, prune_run
  config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides)
  options = {k: v for k, v in (('percdamp', args.percdamp), ('blocksize', args.blocksize),
                               ('per_row', args.per_row or None)) if v is not None}
  if options and args.method != 'sparsegpt':
    raise config_lib.ConfigError(
        f'--{next(iter(options)).replace("_", "-")} applies to sparsegpt only')
  if args.per_row and args.nm:
    raise config_lib.ConfigError('--per-row applies to unstructured targets (--sparsity)')
  owl_args = {k: v for k, v in (('m', args.owl_m), ('lam', args.owl_lambda)) if v is not None}
  if owl_args and not args.owl:
    raise config_lib.ConfigError('--owl-m and --owl-lambda need --owl')
  if args.owl and args.nm:
    raise config_lib.ConfigError('--owl allocates unstructured sparsities; give --sparsity')
  from sparsejax.posttrain import OWL
  report = prune_run.run_prune(config, args.workdir, method=args.method,
                                sparsity=args.sparsity, nm=args.nm,
                                calibration=args.calibration, init_from=args.init_from,
                                options=options, owl=OWL(**owl_args) if args.owl else None,
                                evaluate=not args.no_eval)
  print(f"\n{report['method']} {report['target']}: {len(report['layers'])} matrices pruned "
        f"in {report['wall_seconds']:.1f} s from {report['calibration_tokens']:.0f} "
        f"calibration tokens; left dense: {', '.join(report['left_dense']) or 'none'}")
  if report.get('owl'):
    owl = report['owl']
    spars = [v for v in owl['sparsities'].values() if v is not None]
    print(f"OWL (M={owl['m']:g}, lambda={owl['lambda']:g}): block sparsities "
          f"{min(spars):.4f}..{max(spars):.4f}, {100 * report['pruned_fraction']:.2f}% of the "
          'pruned matrices pruned')
  for name, evals in report.get('eval', {}).items():
    print(f'{name:>7}: ' + ', '.join(f'{split} loss {e["loss"]:.4f}' + (
        f' accuracy {e["accuracy"]:.4f}' if 'accuracy' in e else '') + (
        f' perplexity {e["perplexity"]:.4f}' if 'perplexity' in e else '')
        for split, e in evals.items()))
  where = pathlib.Path(args.workdir).absolute()
  print(f'\nwritten to {where}; recover with the mask fixed:\n  '
        + recovery_command(args.config, config, overrides, where))
  return 0


def recovery_command(config_path, config, overrides, pruned) -> str:
  """The `sparsejax finetune` line that retrains the `sparsejax prune`
  workdir `pruned` with its mask fixed: the prune's config file and
  overrides (the same model), with the pruning block turned into a fixed
  mask: the config's schedule settings that 'fixed' does not take unset and
  a nonzero `sparsity` set to 0 (the mask comes from the pruned zeros)."""
  import shlex
  from sparsejax import config as config_lib
  from sparsejax.core import registry
  fixed = registry.schedule_fields('fixed')
  keys = {**overrides, 'finetune.init_from': str(pruned), 'finetune.method': 'masked',
          'pruning.schedule': 'fixed'}
  for key, value in config.pruning.items():
    if key not in config_lib.PRUNING_KEYS and key not in fixed and value is not None:
      keys[f'pruning.{key}'] = 'None'
  if config.get('sparsity'):
    keys['sparsity'] = '0'
  return ' '.join(['sparsejax finetune --config', shlex.quote(str(config_path)),
                   '--workdir DIR'] + [shlex.quote(f'--config.{k}={v}') for k, v in keys.items()])


def _sweep(args) -> int:
  """Runs a sweep, or one point of it (--index, or a job array task's
  $SLURM_ARRAY_TASK_ID), or only reads it (--count, --list, --collect).
  Exit 1 when a point that was to run failed: any of the whole sweep's, or
  the one point's, so that the array task shows as failed."""
  from sparsejax import sweep
  from sparsejax.programs import report
  if args.count or args.list or args.collect:
    return _sweep_read(args)
  rows = sweep.run_sweep(args.config, args.workdir, jobs=args.jobs, index=args.index,
                         environ=os.environ)
  one = sweep.point_index(args.index, len(rows), os.environ)   # already checked
  if one is not None:
    return 1 if rows[one].get('status') == 'failed' else 0
  print()
  print(report.report(pathlib.Path(args.workdir).absolute(), metric=args.metric))
  return 1 if any(r.get('status') == 'failed' for r in rows) else 0


def _sweep_read(args) -> int:
  """`sweep --count`, `--list` or `--collect`: runs no point."""
  from sparsejax import config as config_lib
  from sparsejax import sweep
  from sparsejax.programs import report
  if args.index is not None:
    raise config_lib.ConfigError('--index runs one point; --count, --list and --collect '
                                 'run none: give one or the other')
  root = pathlib.Path(args.workdir).absolute()
  points, _ = sweep.load_sweep(args.config)
  if args.count:
    print(len(points))
    return 0
  if args.list:
    print('\n'.join(sweep.list_lines(root, points)))
    return 0
  if not root.is_dir():
    raise config_lib.ConfigError(f'--workdir {args.workdir!r} does not exist: no sweep ran '
                                 'there to collect')
  rows = sweep.collect(root, points)
  print()
  print(report.report(root, metric=args.metric))
  return 1 if any(r.get('status') == 'failed' for r in rows) else 0


def _export(args) -> int:
  """The export, then its outputs checked on test examples: exit 1 past
  `export_check.tolerance`; a run started from Python is said to be unverified.
  A `sparsejax prune` workdir is checked with its recorded config."""
  from sparsejax import experiment, prune_run
  from sparsejax.programs import export
  if args.hf is not None:
    return _export_hf(args)
  if args.layout is not None:
    raise export.ExportError('--layout applies to --peft-delta')
  rep = export.export(args.path, args.format or 'csr', args.out, safetensors=args.safetensors)
  print(f"{rep['file']}: {rep['bytes_on_disk']:,} bytes on disk, dense "
        f"{rep['dense_bytes_on_disk']:,} ({100 * rep['ratio']:.1f}%)")
  for leaf, kind in rep['leaves'].items():
    print(f'  {leaf}: {kind}')
  import warnings
  try:
    with warnings.catch_warnings():   # printed below, as one line
      warnings.simplefilter('ignore', export.CheckedDense)
      verify = (prune_run.verify_export if prune_run.is_workdir(args.path)
                else experiment.verify_export)
      check = verify(args.path, pathlib.Path(rep['file']).parent, report=True)
  except export.NotVerifiable as e:
    print(f'outputs not verified: {_one_line(e)}')
    return 0
  if check['dense_leaves']:
    print(f"sparse products not exercised: {', '.join(check['dense_leaves'])} stored sparse "
          'but used by no nn.Dense / nnx.Linear; checked the export loaded dense')
  what = (f"max |output - masked dense output| on {check['examples']} test examples: "
          f"{check['max_abs_diff']:.2e}")
  print(f"{what} (tolerance {check['tolerance']:.1e})")
  if not check['ok']:
    print(f"sparsejax: export check failed: {what} exceeds the tolerance "
          f"{check['tolerance']:.1e} (1e-5 * max(1, max |output|))", file=sys.stderr)
  return 0 if check['ok'] else 1


def _export_hf(args) -> int:
  """`export --hf DIR`: the folder, then read back: exit 1 unless its
  weights are the run's bitwise and its config.json gives the same model."""
  from sparsejax.programs import export
  given = [f for f, v in (('--format', args.format), ('--safetensors', args.safetensors),
                          ('--out', args.out), ('--peft-delta', args.peft_delta),
                          ('--layout', args.layout), ('--base', args.base)) if v]
  if given:
    raise export.ExportError(f'--hf writes a Hugging Face folder (safetensors) to its own '
                             f'argument; {given[0]} does not apply to it')
  rep = export.export_hf(args.path, args.hf)
  eos = (f"end-of-sequence ids {rep['eos_ids']}" if rep['eos_ids'] else
         'no end-of-sequence ids known (no generation_config.json)')
  print(f"{rep['folder']}: {', '.join(rep['files'])}; model.safetensors {rep['bytes']:,} "
        f"bytes; tokenizer of {rep['pretrained']}, {eos}")
  what = (f"read back: max |difference| {rep['max_abs_diff']:.2e}, same architecture: "
          f"{rep['same_config']}")
  print(what)
  if rep['max_abs_diff'] != 0.0 or not rep['same_config']:   # NaN fails too
    print(f'sparsejax: --hf check failed: {what}: the folder does not hold the run\'s model',
          file=sys.stderr)
    return 1
  return 0


PEFT_TOLERANCE = 1e-5   # max |delta merged - merged.npz| over the weights (rows: exactly 0)


def _peft_delta(args) -> int:
  from sparsejax.programs import peft_checkpoint
  for flag, value in (('--format', args.format), ('--hf', args.hf)):
    if value is not None:
      raise peft_checkpoint.DeltaError(f'{flag} does not apply to --peft-delta')
  rep = peft_checkpoint.save_delta(args.path, args.out, base=args.base,
                                   layout=args.layout or 'sparsejax',
                                   safetensors=args.safetensors)
  print(f"{rep['delta']}: {rep['method']} delta ({rep.get('layout', 'sparsejax')} layout), "
        f"{rep['delta_bytes']:,} bytes on disk; full "
        f"model {rep['full_array_bytes']:,} bytes of arrays ({100 * rep['ratio']:.2f}%)")
  if 'merged_npz_bytes' in rep:
    diff = rep['max_abs_diff_vs_merged_npz']
    what = f'max |delta merged - merged.npz| {diff:.2e}'
    print(f"merged.npz of the run: {rep['merged_npz_bytes']:,} bytes; {what} "
          f'(tolerance {PEFT_TOLERANCE:.0e})')
    if not diff <= PEFT_TOLERANCE:   # NaN fails too
      print(f'sparsejax: delta check failed: {what} exceeds the tolerance '
            f'{PEFT_TOLERANCE:.0e}: the delta does not rebuild the run', file=sys.stderr)
      return 1
  return 0


def _merge(args) -> int:
  from sparsejax.programs import peft_checkpoint
  rep = peft_checkpoint.write_merged(args.delta, args.out, base=args.base)
  print(f"{rep['merged']}: full model, {rep['merged_bytes']:,} bytes; delta {rep['delta']}: "
        f"{rep['delta_bytes']:,} bytes ({100 * rep['delta_bytes'] / rep['merged_bytes']:.2f}%)")
  return 0


def results_table(summary: dict) -> str:
  lines = ['| split | loss | accuracy | examples |', '|---|---|---|---|']
  for split, e in summary['eval'].items():
    lines.append(f"| {split} | {e['loss']:.4f} | {e['accuracy']:.4f} | {e['examples']} |")
  lines.append('')
  lines.append(f"weights kept: {summary['active']:,} of {summary['prunable']:,} prunable "
               f"(density {summary['density']:.4f}, sparsity {1 - summary['density']:.4f})")
  return '\n'.join(lines)


def _train(args, overrides) -> int:
  if args.coordinator or args.distributed:
    import jax
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  from sparsejax import config as config_lib, experiment
  from sparsejax.train import inspection, loop
  config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides)
  try:
    summary = experiment.train_and_evaluate(config, args.workdir, progress=not args.no_progress)
  except loop.Interrupted as e:
    print(f'sparsejax: interrupted: {e}', file=sys.stderr)
    return 128 + e.signum
  import jax
  table = inspection.inspect(args.workdir)   # every process: orbax restores collectively
  if jax.process_index() == 0:
    print(results_table(summary))
    print()
    print(table)
  return 0


def _eval(args) -> int:
  from sparsejax import experiment
  from sparsejax.programs import evaluate
  workdir = pathlib.Path(args.workdir).absolute()
  summary = evaluate.evaluate(experiment.task_of_run(workdir), workdir, args.split, args.step,
                              per_example=bool(args.per_example))
  print(f'step {summary["step"]} of {workdir}')
  print(results_table(summary))
  if args.per_example:
    path = evaluate.save_per_example(args.per_example, summary['per_example'])
    print(f'per-example loss and metrics of {", ".join(summary["per_example"])} in {path}')
  return 0


def _language_model(args) -> int:
  from sparsejax.programs import generate, perplexity
  if args.command == 'generate':
    row = generate.run(args.model, args.prompt, weights=args.weights,
                       max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       seed=args.seed)
    print(row['text'])
    print(f"\n[{row['new_tokens']} new tokens in {row['seconds']:.2f} s, "
          f"{row['tokens_per_second']:.1f} tokens/s]", file=sys.stderr)
    return 0
  row = perplexity.run(args.model, weights=args.weights, text_file=args.text,
                       corpus_part=args.corpus, seqlen=args.seqlen,
                       max_windows=args.max_windows, batch=args.batch, out=args.out,
                       nll_out=args.save_nll)
  print(f"perplexity {row['perplexity']:.4f} over {row['windows']} of {row['total_windows']} "
        f"windows of {row['seqlen']} tokens ({row['predicted_tokens']} predicted); "
        f"{row['tokens_per_second']:.1f} tokens/s ({row['seconds']:.1f} s, compile "
        f"{row['compile_seconds']:.1f} s)")
  return 0


def _one_line(error: Exception) -> str:
  """An error message on one line, cut to a readable length."""
  text = ' '.join(str(error).split())
  return text if len(text) <= 600 else text[:597] + '...'


def enable_compilation_cache() -> str | None:
  """Turn on JAX's persistent compilation cache for command-line runs, so a
  second run (a sweep point, a lottery level in its own process, a resume)
  loads its programs instead of compiling them again. The directory is
  $JAX_COMPILATION_CACHE_DIR if set, else $SPARSEJAX_CACHE_DIR, else
  ~/.cache/sparsejax/jax; SPARSEJAX_CACHE_DIR=off turns it off. Returns the
  directory used (None: off)."""
  import os
  import jax
  where = os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.environ.get('SPARSEJAX_CACHE_DIR')
  if where == 'off':
    return None
  if not where:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    where = os.path.join(base, 'sparsejax', 'jax')
  jax.config.update('jax_compilation_cache_dir', where)
  # our programs compile in well under JAX's default 1 s threshold
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  return where


def main(argv=None) -> int:
  if argv is None:   # the command line (not a test calling main): cache programs across runs
    enable_compilation_cache()
  argv = list(sys.argv[1:] if argv is None else argv)
  from sparsejax import config as config_lib
  from sparsejax.core.schedules import ScheduleError
  from sparsejax.data.base import DataError
  from sparsejax.optim import OptimizerError
  from sparsejax.programs.export_formats import ExportError
  from sparsejax.train import checkpoint as ckpt_lib
  from sparsejax.train.task import SetupError
  try:
    argv, overrides = config_lib.split_overrides(argv)
  except config_lib.ConfigError as e:
    print(f'sparsejax: {e}', file=sys.stderr)
    return 2
  args = _parser().parse_args(argv)
  workdir = getattr(args, 'workdir', None)
  if workdir and pathlib.Path(workdir).exists() and not pathlib.Path(workdir).is_dir():
    print(f'sparsejax: --workdir {workdir!r} is a file, not a directory', file=sys.stderr)
    return 2
  if overrides and args.command not in ('train', 'lottery', 'finetune', 'prune', 'config'):
    print('sparsejax: --config.KEY overrides apply to train, lottery, finetune, prune and '
          'config only', file=sys.stderr)
    return 2
  try:
    if args.command == 'train':
      return _train(args, overrides)
    if args.command == 'eval':
      return _eval(args)
    if args.command == 'lottery':
      return _lottery(args, overrides)
    if args.command == 'finetune':
      return _finetune(args, overrides)
    if args.command == 'prune':
      return _prune(args, overrides)
    if args.command == 'config':
      config = config_lib.apply_overrides(config_lib.load_config(args.show), overrides)
      config_lib.to_settings(config)     # a bad key or value: the usual one line
      print('\n'.join(config_lib.show(config)))
      return 0
    if args.command == 'sweep':
      return _sweep(args)
    if args.command == 'export' and args.peft_delta:
      return _peft_delta(args)
    if args.command == 'merge':
      return _merge(args)
    if args.command == 'export':
      return _export(args)
    if args.command == 'reproduce':
      from sparsejax import reproduce
      claims = reproduce.reproduce(args.name, args.workdir, jobs=args.jobs,
                                   collect=args.collect)
      return 0 if all(c.passed is not False for c in claims) else 1
    if args.command in ('perplexity', 'generate'):
      return _language_model(args)
    if args.command == 'report':
      from sparsejax.programs import report
      print(report.report(args.dirs, args.out, args.metric))
      return 0
    if args.command == 'inspect':
      from sparsejax.train import inspection
      print(inspection.inspect(args.path))
      return 0
  except (config_lib.ConfigError, ckpt_lib.CheckpointError, DataError, SetupError,
          ScheduleError, OptimizerError, ExportError) as e:
    print(f'sparsejax: {_one_line(e)}', file=sys.stderr)
    return 2
  except ValueError as e:      # bad input found deeper down: one line as well
    if os.environ.get('SPARSEJAX_DEBUG'):
      raise
    print(f'sparsejax: {_one_line(e)} (SPARSEJAX_DEBUG=1 shows the traceback)',
          file=sys.stderr)
    return 2
  except RuntimeError as e:
    from sparsejax.train import loop
    if isinstance(e, loop.NonFiniteError):
      print(f'sparsejax: {_one_line(e)}', file=sys.stderr)
      return 1
    raise
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
