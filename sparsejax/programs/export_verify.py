"""An export checked against the run it came from: `sparsejax export`.

`verify_on_test` runs the export in a folder and the masked dense model of a
run (its model and dataset given, its final weights read from the workdir)
on the first test examples and compares their outputs
(`export_check.verify_report`). `export_checked` writes a compact export and
then checks it with a given function of (workdir, export folder): the
caller's, which rebuilds the run's model from what the workdir records.
`export_command` is the command: that, or a Hugging Face folder read back
(`export.export_hf`), or a PEFT run's delta checked against its merged
weights (`peft_checkpoint.save_delta`).
"""

from __future__ import annotations

import pathlib
from typing import Callable

import numpy as np

from sparsejax.programs import export, export_check, peft_checkpoint, results as results_lib
from sparsejax.programs import summaries
from sparsejax.train import task as task_lib


def verify_on_test(model, dataset, workdir, export_dir, batch: int = 128,
                   report: bool = False):
  """`export.verify` (with `report`: `export_check.verify_report`'s dict) of
  the export in `export_dir` against `model` with the final weights of
  `workdir` (a run, or a `sparsejax prune` workdir), on the first `batch`
  test examples of `dataset`."""
  params, model_state, _ = results_lib.final_weights(workdir)
  x = dataset.test.get(np.arange(min(batch, len(dataset.test))))[0]
  check = export_check.verify_report(model.apply, params, model_state, x, export_dir,
                                     **task_lib.train_kwarg(model, False))   # as Task passes it
  return check if report else check['max_abs_diff']


def export_checked(path, fmt: str, out, safetensors: bool,
                   check: Callable[[object, pathlib.Path], dict],
                   log: Callable[[str], None] = print) -> tuple[str, str | None]:
  """`export.export` of the run in `path` (its size report logged), then
  `check(path, export folder)` (`export_check.verify_report`'s dict, or
  {'not_verified': error}): (the check's text, the failure or None)."""
  rep = export.export(path, fmt, out, safetensors=safetensors)
  log(summaries.export(rep))
  return summaries.export_check(check(path, pathlib.Path(rep['file']).parent))


def export_command(path, *, check: Callable[[object, pathlib.Path], dict], fmt=None,
                   out=None, safetensors: bool = False, hf=None, peft_delta: bool = False,
                   layout=None, base=None, log: Callable[[str], None] = print
                   ) -> tuple[str, str | None]:
  """`sparsejax export`: with `peft_delta`, the run's delta (`layout`, `base`);
  with `hf`, a Hugging Face folder; else the `export_checked` compact export
  (`fmt`, default 'csr'). (The text of its check, the failure or None.)"""
  if peft_delta:
    return summaries.peft_delta(peft_checkpoint.save_delta(
        path, out, base=base, layout=layout or 'sparsejax', safetensors=safetensors))
  if hf is not None:
    return summaries.export_hf(export.export_hf(path, hf))
  return export_checked(path, fmt or 'csr', out, safetensors, check, log)
