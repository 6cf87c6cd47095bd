"""Post-training pruning from a config: `sparsejax prune` and its Python form.

`run_prune` builds the config's task, loads trained weights and runs
`programs.prune.prune` on them: layer by layer with calibration batches
(`sparsejax.posttrain`: magnitude, Wanda, SparseGPT), writing a pruned
checkpoint with its masks that `load_pruned` reads back. `sparsejax export
WORKDIR --format dense --safetensors` (or csr, nm, ell) writes that
checkpoint as a portable file, checked by `verify_export`, and `--hf DIR` a
Llama's as a Hugging Face folder. `prune_options` turns the command's flags
into `run_prune`'s options, `recovery_command` is the `sparsejax finetune`
line it prints (`prune_command`: the command's whole output), and
`check_export` checks any export.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import warnings

import flax.linen as nn
import ml_collections

from sparsejax import build, config as config_lib, experiment
from sparsejax.config import ConfigError
from sparsejax.core import registry
from sparsejax.posttrain import OWL, nnx_layers
from sparsejax.programs import export, export_verify, prune as prune_lib, summaries
from sparsejax.programs.prune import is_workdir, load_pruned  # noqa: F401  (re-exported)


def run_prune(config, workdir, *, method: str, sparsity: float | None = None, nm=None,
              calibration: int = 128, init_from: str | None = None,
              options: dict | None = None, owl=None, evaluate: bool = True,
              log=print) -> dict:
  """Post-training pruning (`programs.prune.prune`) of the config's model,
  loaded from `init_from` (default `finetune.init_from`: a run, checkpoint,
  .npz / .safetensors, or 'minilm'), with the first `calibration` training
  examples as calibration data; `options` are the method's (SparseGPT:
  percdamp, blocksize, per_row) and `owl` a `posttrain.OWL` for per-block
  sparsities. Writes `workdir/state` (params and masks; what
  `finetune.init_from=workdir` with `pruning.schedule='fixed'` loads, and
  `load_pruned` reads) and `workdir/prune.json`; returns the report, with the
  dense and pruned evaluation under 'eval'."""
  s = config_lib.to_settings(config)
  init_from = init_from or s.finetune.init_from
  if not init_from:
    raise ConfigError("post-training pruning needs trained weights: give --from or set "
                      "'finetune.init_from'")
  task = build.build_task(s)   # (a distill block is for the fine-tuning that follows)
  run = experiment.dense_run(task)
  if not isinstance(task.model, nn.Module) and not nnx_layers.is_nnx(task.model):
    raise ConfigError(f'post-training pruning takes a Flax Linen or NNX model; {s.model.name!r} '
                      f'gave {type(task.model).__name__}')
  params, model_state = prune_lib.start_weights(init_from, run, s.seed)
  batches = experiment.wrap_setup(prune_lib.calibration_batches, task, calibration)
  recorded = {'config': config_lib.record(config)['config']}   # what prune.json records
  return prune_lib.prune(task, run.mesh, params, model_state, batches, workdir, method=method,
                         sparsity=sparsity, nm=nm, source=init_from, options=options, owl=owl,
                         evaluate=evaluate, record=recorded, log=log)


def prune_options(method: str, nm=None, *, percdamp: float | None = None,
                  blocksize: int | None = None, per_row: bool = False, owl: bool = False,
                  owl_m: float | None = None, owl_lambda: float | None = None) -> dict:
  """`sparsejax prune`'s method flags as `run_prune`'s `options` and `owl`:
  the SparseGPT settings (percdamp, blocksize, per_row), and a `posttrain.OWL`
  (M, lambda) with --owl. A flag that does not apply: ConfigError."""
  options = {k: v for k, v in (('percdamp', percdamp), ('blocksize', blocksize),
                               ('per_row', per_row or None)) if v is not None}
  if options and method != 'sparsegpt':
    raise ConfigError(f'--{next(iter(options)).replace("_", "-")} applies to sparsegpt only')
  if per_row and nm:
    raise ConfigError('--per-row applies to unstructured targets (--sparsity)')
  owl_args = {k: v for k, v in (('m', owl_m), ('lam', owl_lambda)) if v is not None}
  if owl_args and not owl:
    raise ConfigError('--owl-m and --owl-lambda need --owl')
  if owl and nm:
    raise ConfigError('--owl allocates unstructured sparsities; give --sparsity')
  return {'options': options, 'owl': OWL(**owl_args) if owl else None}


def recovery_command(config_path, config, overrides, pruned) -> str:
  """The `sparsejax finetune` line that retrains the `sparsejax prune`
  workdir `pruned` with its mask fixed: the prune's config file and
  overrides (the same model), with the pruning block turned into a fixed
  mask: the config's schedule settings that 'fixed' does not take unset and
  a nonzero `sparsity` set to 0 (the mask comes from the pruned zeros)."""
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


def prune_command(config_path, config, overrides, workdir, *, method: str, sparsity=None,
                  nm=None, calibration: int = 128, init_from: str | None = None,
                  evaluate: bool = True, **flags) -> str:
  """What `sparsejax prune` prints: `run_prune` with the command's method
  `flags` (`prune_options`), its report and the `recovery_command`."""
  report = run_prune(config, workdir, method=method, sparsity=sparsity, nm=nm,
                     calibration=calibration, init_from=init_from, evaluate=evaluate,
                     **prune_options(method, nm, **flags))
  where = pathlib.Path(workdir).absolute()
  return (f'{summaries.prune(report)}\n\nwritten to {where}; recover with the mask fixed:\n  '
          + recovery_command(config_path, config, overrides, where))


def verify_export(workdir, export_dir, batch: int = 128, report: bool = False):
  """`experiment.verify_export` for a `run_prune` workdir: the model of its
  recorded config (prune.json), its pruned params and the first `batch`
  test examples, against the export in `export_dir`."""
  recorded = json.loads((pathlib.Path(workdir) / 'prune.json').read_text())
  s = config_lib.to_settings(ml_collections.ConfigDict(recorded['config']))
  dataset = build.build_dataset(s.data)
  return export_verify.verify_on_test(build.build_model(s.model, dataset), dataset, workdir,
                                      export_dir, batch, report)


def check_export(path, export_dir) -> dict:
  """The outputs of the export in `export_dir` against the masked dense model
  of `path` (a run, or a `run_prune` workdir with its recorded config) on test
  examples: `export_check.verify_report`'s dict, or {'not_verified': the
  `export.NotVerifiable`} for a run started from Python."""
  try:
    with warnings.catch_warnings():   # the report's 'dense_leaves' says it
      warnings.simplefilter('ignore', export.CheckedDense)
      verify = verify_export if is_workdir(path) else experiment.verify_export
      return verify(path, export_dir, report=True)
  except export.NotVerifiable as e:
    return {'not_verified': e}
