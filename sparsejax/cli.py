"""The `sparsejax` command line (`sparsejax --help`; the arguments are in
`sparsejax.cli_args`). Each handler parses, calls one function of the
library (`sparsejax.programs`, or `experiment` / `prune_run`, which turn a
config into its objects) and prints its result (`programs.summaries`).

`train` resumes when DIR already holds a checkpoint of the same config.
"""

from __future__ import annotations

import os
import pathlib
import sys

from sparsejax import cli_args
from sparsejax.programs.compilation_cache import enable_compilation_cache  # noqa: F401
from sparsejax.programs.summaries import one_line


def _config(path, overrides):
  from sparsejax import config as config_lib
  return config_lib.apply_overrides(config_lib.load_config(path), overrides)


def _emit(text: str, failure: str | None) -> int:
  """Prints a checked result: exit 1, with one `sparsejax:` line, on failure."""
  print(text)
  if failure:
    print(f'sparsejax: {failure}', file=sys.stderr)
  return 1 if failure else 0


def _show_config(args, overrides) -> int:
  from sparsejax import config as config_lib
  config = _config(args.show, overrides)
  config_lib.to_settings(config)     # a bad key or value: the usual one line
  print('\n'.join(config_lib.show(config)))
  return 0


def _train(args, overrides) -> int:
  import jax
  if args.coordinator or args.distributed:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  from sparsejax import experiment
  from sparsejax.programs import summaries
  from sparsejax.train import inspection, loop
  try:
    summary = experiment.train_and_evaluate(_config(args.config, overrides), args.workdir,
                                            progress=not args.no_progress)
  except loop.Interrupted as e:
    print(f'sparsejax: interrupted: {e}', file=sys.stderr)
    return 128 + e.signum
  table = inspection.inspect(args.workdir)   # every process: orbax restores collectively
  if jax.process_index() == 0:
    print(f'{summaries.results_table(summary)}\n\n{table}')
  return 0


def _eval(args, overrides) -> int:
  from sparsejax import experiment
  from sparsejax.programs import evaluate, summaries
  workdir = pathlib.Path(args.workdir).absolute()
  summary = evaluate.evaluate(experiment.task_of_run(workdir), workdir, args.split, args.step,
                              per_example=bool(args.per_example))
  print(f'step {summary["step"]} of {workdir}\n{summaries.results_table(summary)}')
  if args.per_example:
    path = evaluate.save_per_example(args.per_example, summary['per_example'])
    print(f'per-example loss and metrics of {", ".join(summary["per_example"])} in {path}')
  return 0


def _inspect(args, overrides) -> int:
  from sparsejax.train import inspection
  print(inspection.inspect(args.path))
  return 0


def _lottery(args, overrides) -> int:
  from sparsejax import experiment
  from sparsejax.programs import report
  config = _config(args.config, overrides)
  experiment.run_lottery(config, args.workdir, progress=args.progress)
  print(f'\n{report.report(experiment.lottery_dir(config, args.workdir))}')
  return 0


def _finetune(args, overrides) -> int:
  from sparsejax import experiment
  from sparsejax.programs import results, summaries
  row = experiment.run_finetune(_config(args.config, overrides), args.workdir,
                                progress=not args.no_progress)
  results.save_row(args.workdir, row)
  print(summaries.finetune(row))
  return 0


def _prune(args, overrides) -> int:
  from sparsejax import prune_run
  from sparsejax.programs import summaries
  config = _config(args.config, overrides)
  method = prune_run.prune_options(args.method, args.nm, percdamp=args.percdamp,
                                   blocksize=args.blocksize, per_row=args.per_row, owl=args.owl,
                                   owl_m=args.owl_m, owl_lambda=args.owl_lambda)
  report = prune_run.run_prune(config, args.workdir, method=args.method, sparsity=args.sparsity,
                               nm=args.nm, calibration=args.calibration,
                               init_from=args.init_from, evaluate=not args.no_eval, **method)
  where = pathlib.Path(args.workdir).absolute()
  print(f'{summaries.prune(report)}\n\nwritten to {where}; recover with the mask fixed:\n  '
        + prune_run.recovery_command(args.config, config, overrides, where))
  return 0


def recovery_command(config_path, config, overrides, pruned) -> str:
  """`prune_run.recovery_command`: the line `sparsejax prune` prints."""
  from sparsejax import prune_run
  return prune_run.recovery_command(config_path, config, overrides, pruned)


def _sweep(args, overrides) -> int:
  """Runs a sweep, or one point of it (--index, or a job array task's
  $SLURM_ARRAY_TASK_ID), or only reads it (--count, --list, --collect: runs
  no point). Exit 1 when a point that was to run failed: any of the whole
  sweep's, or the one point's, so that the array task shows as failed."""
  from sparsejax import config as config_lib, sweep
  from sparsejax.programs import report
  root = pathlib.Path(args.workdir).absolute()
  if not (args.count or args.list or args.collect):
    rows = sweep.run_sweep(args.config, args.workdir, jobs=args.jobs, index=args.index,
                           environ=os.environ)
    one = sweep.point_index(args.index, len(rows), os.environ)   # already checked
    if one is not None:
      return 1 if rows[one].get('status') == 'failed' else 0
  elif args.index is not None:
    raise config_lib.ConfigError('--index runs one point; --count, --list and --collect '
                                 'run none: give one or the other')
  else:
    points, _ = sweep.load_sweep(args.config)
    if args.count or args.list:
      print(len(points) if args.count else '\n'.join(sweep.list_lines(root, points)))
      return 0
    if not root.is_dir():
      raise config_lib.ConfigError(f'--workdir {args.workdir!r} does not exist: no sweep ran '
                                   'there to collect')
    rows = sweep.collect(root, points)
  print(f'\n{report.report(root, metric=args.metric)}')
  return 1 if any(r.get('status') == 'failed' for r in rows) else 0


def _export(args, overrides) -> int:
  """The export, then checked: a compact checkpoint's outputs on test examples
  (exit 1 past the tolerance), a Hugging Face folder read back, a PEFT delta
  against the run's merged weights."""
  from sparsejax.programs import export, peft_checkpoint, summaries
  cli_args.check_export(args)
  if args.peft_delta:
    return _emit(*summaries.peft_delta(peft_checkpoint.save_delta(
        args.path, args.out, base=args.base, layout=args.layout or 'sparsejax',
        safetensors=args.safetensors)))
  if args.hf is not None:
    return _emit(*summaries.export_hf(export.export_hf(args.path, args.hf)))
  from sparsejax import prune_run
  rep = export.export(args.path, args.format or 'csr', args.out, safetensors=args.safetensors)
  print(summaries.export(rep))
  return _emit(*summaries.export_check(
      prune_run.check_export(args.path, pathlib.Path(rep['file']).parent)))


def _merge(args, overrides) -> int:
  from sparsejax.programs import peft_checkpoint, summaries
  print(summaries.merge(peft_checkpoint.write_merged(args.delta, args.out, base=args.base)))
  return 0


def _report(args, overrides) -> int:
  from sparsejax.programs import report
  print(report.report(args.dirs, args.out, args.metric))
  return 0


def _reproduce(args, overrides) -> int:
  from sparsejax import reproduce
  claims = reproduce.reproduce(args.name, args.workdir, jobs=args.jobs, collect=args.collect)
  return 0 if all(c.passed is not False for c in claims) else 1


def _perplexity(args, overrides) -> int:
  from sparsejax.programs import perplexity, summaries
  print(summaries.perplexity(perplexity.run(
      args.model, weights=args.weights, text_file=args.text, corpus_part=args.corpus,
      seqlen=args.seqlen, max_windows=args.max_windows, batch=args.batch, out=args.out,
      nll_out=args.save_nll)))
  return 0


def _generate(args, overrides) -> int:
  from sparsejax.programs import generate, summaries
  row = generate.run(args.model, args.prompt, weights=args.weights,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                     seed=args.seed)
  print(row['text'])
  print(summaries.generate_speed(row), file=sys.stderr)
  return 0


def _parser():
  return cli_args.parser(
      config=_show_config, train=_train, eval=_eval, inspect=_inspect, lottery=_lottery,
      finetune=_finetune, prune=_prune, sweep=_sweep, export=_export, merge=_merge,
      report=_report, reproduce=_reproduce, perplexity=_perplexity, generate=_generate)


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
  if overrides and not args.takes_overrides:
    print(f'sparsejax: --config.KEY overrides apply to {args.override_commands} only',
          file=sys.stderr)
    return 2
  try:
    return args.run(args, overrides)
  except (config_lib.ConfigError, ckpt_lib.CheckpointError, DataError, SetupError,
          ScheduleError, OptimizerError, ExportError) as e:
    print(f'sparsejax: {one_line(e)}', file=sys.stderr)
    return 2
  except ValueError as e:      # bad input found deeper down: one line as well
    if os.environ.get('SPARSEJAX_DEBUG'):
      raise
    print(f'sparsejax: {one_line(e)} (SPARSEJAX_DEBUG=1 shows the traceback)',
          file=sys.stderr)
    return 2
  except RuntimeError as e:
    from sparsejax.train import loop
    if isinstance(e, loop.NonFiniteError):
      print(f'sparsejax: {one_line(e)}', file=sys.stderr)
      return 1
    raise


if __name__ == '__main__':
  raise SystemExit(main())
