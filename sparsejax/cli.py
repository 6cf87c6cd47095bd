"""The `sparsejax` command line (`sparsejax --help`; the arguments are in
`sparsejax.cli_args`). Each handler calls one function, of `experiment` or
`prune_run` (configs to objects), `sweep` or a program, and prints what it
returns (`programs.summaries`); it returns the exit status (None: 0). The
programs of `cli_args.PROGRAMS` (perplexity, generate) bring their own
arguments and handler (`main(args)`). Bad input is one `sparsejax:` line and
exit 2.
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax

from sparsejax import cli_args, config as config_lib, experiment, optim, prune_run, reproduce
from sparsejax import sweep
from sparsejax.core import schedules
from sparsejax.data import base as data_base
from sparsejax.programs import evaluate, export, export_verify, peft_checkpoint
from sparsejax.programs import report, results, summaries
from sparsejax.programs.compilation_cache import enable_compilation_cache
from sparsejax.prune_run import recovery_command  # noqa: F401  (the line `prune` prints)
from sparsejax.train import checkpoint as ckpt_lib, inspection, loop, task as task_lib

BAD_INPUT = (config_lib.ConfigError, ckpt_lib.CheckpointError, data_base.DataError,
             task_lib.SetupError, schedules.ScheduleError, optim.OptimizerError, export.ExportError)


def _config(path, overrides):
  return config_lib.apply_overrides(config_lib.load_config(path), overrides)


def _checked(text: str, failure: str | None) -> int:   # exit 1 on a failed check
  print(text)
  return _fail(failure, 1) if failure else 0


def _fail(message: str, status: int = 2) -> int:
  print(f'sparsejax: {message}', file=sys.stderr)
  return status


def _show_config(args, overrides):
  config = _config(args.show, overrides)
  config_lib.to_settings(config)     # a bad key or value: the usual one line
  print('\n'.join(config_lib.show(config)))


def _train(args, overrides):
  if args.coordinator or args.distributed:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  try:
    summary = experiment.train_and_evaluate(_config(args.config, overrides), args.workdir,
                                            progress=not args.no_progress)
  except loop.Interrupted as e:
    return _fail(f'interrupted: {e}', 128 + e.signum)
  table = inspection.inspect(args.workdir)   # every process: orbax restores collectively
  if jax.process_index() == 0:
    print(f'{summaries.results_table(summary)}\n\n{table}')


def _lottery(args, overrides):
  config = _config(args.config, overrides)
  experiment.run_lottery(config, args.workdir, progress=args.progress)
  print(f'\n{report.report(experiment.lottery_dir(config, args.workdir))}')


def _finetune(args, overrides):
  row = experiment.run_finetune(_config(args.config, overrides), args.workdir,
                                progress=not args.no_progress)
  results.save_row(args.workdir, row)
  print(summaries.finetune(row))


def _prune(args, overrides):
  flags = {k: getattr(args, k) for k in ('method', 'sparsity', 'nm', 'calibration', 'init_from',
           'percdamp', 'blocksize', 'per_row', 'owl', 'owl_m', 'owl_lambda')}
  print(prune_run.prune_command(args.config, _config(args.config, overrides), overrides,
                                args.workdir, evaluate=not args.no_eval, **flags))


def _export(args, overrides):
  cli_args.check_export(args)
  return _checked(*export_verify.export_command(
      args.path, check=prune_run.check_export, fmt=args.format, out=args.out,
      safetensors=args.safetensors, hf=args.hf, peft_delta=args.peft_delta,
      layout=args.layout, base=args.base))


def _eval(args, overrides):
  evaluate.run(experiment.task_of_run(args.workdir), args.workdir, args.split, args.step,
               args.per_example)


def _parser():
  return cli_args.parser(
      config=_show_config, train=_train, eval=_eval, lottery=_lottery, finetune=_finetune,
      prune=_prune, export=_export,
      inspect=lambda args, _: print(inspection.inspect(args.path)),
      sweep=lambda args, _: sweep.sweep_command(
          args.config, args.workdir, jobs=args.jobs, index=args.index, count=args.count,
          list_points=args.list, collect_only=args.collect, metric=args.metric,
          environ=os.environ),
      merge=lambda args, _: print(summaries.merge(peft_checkpoint.write_merged(
          args.delta, args.out, base=args.base))),
      report=lambda args, _: print(report.report(args.dirs, args.out, args.metric)),
      reproduce=lambda args, _: int(any(c.passed is False for c in reproduce.reproduce(
          args.name, args.workdir, jobs=args.jobs, collect=args.collect))))


def main(argv=None) -> int:
  if argv is None:   # the command line (not a test calling main): cache programs across runs
    enable_compilation_cache()
  try:
    argv, overrides = config_lib.split_overrides(list(sys.argv[1:] if argv is None else argv))
  except config_lib.ConfigError as e:
    return _fail(str(e))
  args = _parser().parse_args(argv)
  workdir = getattr(args, 'workdir', None)
  if workdir and pathlib.Path(workdir).exists() and not pathlib.Path(workdir).is_dir():
    return _fail(f'--workdir {workdir!r} is a file, not a directory')
  if overrides and not args.takes_overrides:
    return _fail(f'--config.KEY overrides apply to {args.override_commands} only')
  try:
    return args.run(args, overrides) or 0
  except BAD_INPUT as e:
    return _fail(summaries.one_line(e))
  except ValueError as e:      # bad input found deeper down: one line as well
    if os.environ.get('SPARSEJAX_DEBUG'):
      raise
    return _fail(f'{summaries.one_line(e)} (SPARSEJAX_DEBUG=1 shows the traceback)')
  except loop.NonFiniteError as e:
    return _fail(summaries.one_line(e), 1)


if __name__ == '__main__':
  raise SystemExit(main())
