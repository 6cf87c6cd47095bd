"""The `sparsejax` command line's arguments: the parser, each subcommand with
its handler (`set_defaults(run=...)`) and whether it takes `--config.KEY=VALUE`
overrides, and the checks of flags that do not go together. The handlers are
in `sparsejax.cli`, except for the programs of `PROGRAMS`, which bring their
own.

A program module in `PROGRAMS` is a whole subcommand: it has `HELP` (the
line of `sparsejax --help`), `add_arguments(parser)` (its flags),
`main(args) -> exit status` (None: 0; bad input raises a ValueError, which the
CLI prints as one `sparsejax:` line with exit 2) and, optionally, `USAGE` (its
lines of the synopsis) and `COMMAND` (its name; default: the module's own).
Adding a program is its module plus its line in `PROGRAMS`.
"""

from __future__ import annotations

import argparse
import importlib

SYNOPSIS = """The `sparsejax` command line.

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
{programs}

`train` resumes when DIR already holds a checkpoint of the same config.
"""

# The programs that bring their own subcommand (see the module's docstring),
# by import path, in the order of `sparsejax --help`.
PROGRAMS = (
    'sparsejax.programs.perplexity',
    'sparsejax.programs.generate',
)


def version() -> str:
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


def programs() -> list:
  """The modules of `PROGRAMS`, imported."""
  return [importlib.import_module(name) for name in PROGRAMS]


def parser(*, config, train, eval, inspect, lottery, finetune, prune, sweep, export, merge,
           report, reproduce) -> argparse.ArgumentParser:
  """The parser. Each keyword is its subcommand's handler, `run(args,
  overrides) -> exit status`, which parsing leaves in `args.run` (a program
  of `PROGRAMS`: its `main(args)`); `args.takes_overrides` says whether the
  subcommand takes `--config.KEY=VALUE` and `args.override_commands` names
  those that do."""
  modules = programs()
  usage = ''.join(getattr(m, 'USAGE', '') for m in modules)
  parser = argparse.ArgumentParser(prog='sparsejax', description=SYNOPSIS.replace(
      '{programs}\n', usage), formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--version', action='version', version=version())
  sub = parser.add_subparsers(dest='command', required=True)

  def command(name, run, *, overrides=False, **kwargs):
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(run=run, takes_overrides=overrides)
    return p

  cfg = command('config', config, overrides=True,
                help="a config's every key with its value and default")
  cfg.add_argument('--show', required=True, metavar='FILE', help='the config file')
  tr = command('train', train, overrides=True,
               help='train (or resume) a run from a config file')
  tr.add_argument('--config', required=True, help='Python file with get_config()')
  tr.add_argument('--workdir', required=True, help='where checkpoints and metrics go')
  tr.add_argument('--no-progress', action='store_true', help='no progress bar')
  tr.add_argument('--coordinator', default=None,
                  help='host:port of process 0, for a multi-process run '
                  '(jax.distributed.initialize); omit on TPU pods and SLURM, where '
                  'JAX finds it itself with --distributed')
  tr.add_argument('--num-processes', type=int, default=None)
  tr.add_argument('--process-id', type=int, default=None)
  tr.add_argument('--distributed', action='store_true',
                  help='call jax.distributed.initialize() with settings from the cluster')
  ev = command('eval', eval, help="evaluate a run's latest (or a given) checkpoint")
  ev.add_argument('--workdir', required=True)
  ev.add_argument('--split', action='append', help='test, validation or train (repeatable)')
  ev.add_argument('--step', type=int, default=None)
  ev.add_argument('--per-example', metavar='FILE.npz', default=None,
                  help="also write each example's loss and accuracy (for paired intervals)")
  ins = command('inspect', inspect, help='per-layer table of a checkpoint')
  ins.add_argument('path', help='a workdir, its checkpoints folder or a step folder')
  lot = command('lottery', lottery, overrides=True,
                help='iterative magnitude pruning as levels, with controls')
  lot.add_argument('--config', required=True)
  lot.add_argument('--workdir', required=True)
  lot.add_argument('--progress', action='store_true', help='progress bars for each run')
  ft = command('finetune', finetune, overrides=True,
               help='prune trained weights and recover, or fine-tune a '
               'small part of them (row-based, LoRA, unstructured, full)')
  ft.add_argument('--config', required=True)
  ft.add_argument('--workdir', required=True)
  ft.add_argument('--no-progress', action='store_true')
  pr = command('prune', prune, overrides=True,
               help='post-training pruning from calibration batches, layer by '
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
  sw = command('sweep', sweep,
               help="run every point of a config's get_sweep() as a process")
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
  ex = command('export', export,
               help='strip the masks into a compact sparse checkpoint, or '
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
  mg = command('merge', merge,
               help='apply a PEFT delta (export --peft-delta, either layout) '
               'to its base weights and write the full model as .npz or .safetensors')
  mg.add_argument('delta', help='a folder written by export --peft-delta')
  mg.add_argument('--out', required=True, help='the .npz or .safetensors to write (by suffix)')
  mg.add_argument('--base', default=None,
                  help="the base weights (default: the path in the delta's manifest)")
  rep = command('report', report, help='tables and plots of lottery or sweep results')
  rep.add_argument('dirs', nargs='+', help='run directories holding results.jsonl')
  rep.add_argument('--out', default=None, help='where to write (default: the first dir)')
  rep.add_argument('--metric', default='test_accuracy',
                   help="e.g. test_accuracy, validation_loss, early_stop_test_accuracy")
  rp = command('reproduce', reproduce,
               help='run one experiments/ folder end to end and print '
               "the paper's numbers against ours")
  rp.add_argument('name', help='an experiments/ folder with a reproduce.py')
  rp.add_argument('--workdir', required=True)
  rp.add_argument('--jobs', type=int, default=1)
  rp.add_argument('--collect', action='store_true', help='run nothing: gather and judge')
  for module in modules:
    name = getattr(module, 'COMMAND', module.__name__.rpartition('.')[2])
    module.add_arguments(command(name, lambda args, _, main=module.main: main(args),
                                 help=module.HELP))

  takers = [name for name, p in sub.choices.items() if p.get_default('takes_overrides')]
  takers.sort(key=lambda name: name == 'config')   # the one that only shows a config, last
  parser.set_defaults(override_commands=', '.join(takers[:-1]) + ' and ' + takers[-1])
  return parser


def check_export(args) -> None:
  """Flags that do not apply to the export asked for: `--peft-delta` takes
  no --format or --hf, `--hf` writes to its own argument and takes no other
  flag, and --layout is for --peft-delta."""
  from sparsejax.programs import export, peft_checkpoint
  if args.peft_delta:
    for flag, value in (('--format', args.format), ('--hf', args.hf)):
      if value is not None:
        raise peft_checkpoint.DeltaError(f'{flag} does not apply to --peft-delta')
    return
  if args.hf is not None:
    given = [f for f, v in (('--format', args.format), ('--safetensors', args.safetensors),
                            ('--out', args.out), ('--peft-delta', args.peft_delta),
                            ('--layout', args.layout), ('--base', args.base)) if v]
    if given:
      raise export.ExportError(f'--hf writes a Hugging Face folder (safetensors) to its own '
                               f'argument; {given[0]} does not apply to it')
  elif args.layout is not None:
    raise export.ExportError('--layout applies to --peft-delta')

