"""Post-training pruning from a config: `sparsejax prune` and its Python form.

`run_prune` loads trained weights, prunes them layer by layer with
calibration batches (`sparsejax.posttrain`: magnitude, Wanda, SparseGPT) and
writes a pruned checkpoint with its masks; `load_pruned` reads it back.
`sparsejax export WORKDIR --format dense --safetensors` (or csr, nm, ell)
writes that checkpoint as a portable file, checked by `verify_export`, and
`--hf DIR` a Llama's as a Hugging Face folder. `prune_options` turns the
command's flags into `run_prune`'s options, `recovery_command` is the
`sparsejax finetune` line it prints, and `check_export` checks any export.
"""

from __future__ import annotations

from typing import Any

from sparsejax import config as config_lib, experiment, models
from sparsejax.config import ConfigError
from sparsejax.core import schedules
from sparsejax.core import tree as tree_lib
from sparsejax.train import loop, task as task_lib


def run_prune(config, workdir, *, method: str, sparsity: float | None = None, nm=None,
              calibration: int = 128, init_from: str | None = None,
              options: dict | None = None, owl=None, evaluate: bool = True,
              log=print) -> dict:
  """Post-training pruning (`sparsejax.posttrain`) of the config's model, loaded
  from `init_from` (default `finetune.init_from`: a run, checkpoint, .npz /
  .safetensors, or 'minilm'), with the first `calibration` training examples
  as calibration data; `options` are the method's (SparseGPT: percdamp,
  blocksize, per_row) and `owl` a `posttrain.OWL` for per-block sparsities.
  Writes `workdir/state` (params and masks; what `finetune.init_from=workdir`
  with `pruning.schedule='fixed'` loads, and `load_pruned` reads) and
  `workdir/prune.json`; returns the report, with the dense and pruned
  evaluation under 'eval'."""
  import json
  import math
  import pathlib
  import time
  import flax.linen as nn
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from sparsejax import posttrain
  from sparsejax.posttrain import nnx_layers
  from sparsejax.models.bert import PAD_ID
  from sparsejax.data import base as data_base
  from sparsejax.train import evaluation, weights as weights_lib
  s = config_lib.to_settings(config)
  init_from = init_from or s.finetune.init_from
  if not init_from:
    raise ConfigError("post-training pruning needs trained weights: give --from or set "
                      "'finetune.init_from'")
  task = experiment.build_task(config)   # (a distill block is for the fine-tuning that follows)
  run = experiment.wrap_setup(loop.build, task.replace(schedule=schedules.Dense(), distill=None))
  if not isinstance(task.model, nn.Module) and not nnx_layers.is_nnx(task.model):
    raise ConfigError(f'post-training pruning takes a Flax Linen or NNX model; {s.model.name!r} '
                      f'gave {type(task.model).__name__}')
  if init_from == 'minilm':
    from sparsejax.models import safetensors_io
    params, _, _ = safetensors_io.load_minilm(num_classes=task.dataset.num_classes,
                                              seed=s.seed)
    tree_lib.check_same_structure(params, run.abstract.params, 'the MiniLM weights')
    model_state = {}
  else:
    params, model_state = weights_lib.load_weights(init_from, run.abstract.params,
                                                   run.abstract.model_state)
  train = task.dataset.train
  if not 0 < calibration <= len(train):
    raise ConfigError(f'calibration={calibration} examples: the train split has {len(train)}')
  size = min(task.batch_size, calibration)
  batches = [train.get(data_base.batch_indices(len(train), size, task.seed, i)[
      :calibration - i * size])[0] for i in range(-(-calibration // size))]
  valid = (lambda x: x != PAD_ID) if isinstance(task.model, models.BertEncoder) else None
  start = time.perf_counter()
  pruned, masks, report = posttrain.prune_model(
      task.model, params, batches, method, sparsity=sparsity, nm=nm,
      model_state=model_state or None, rule=task.rule, valid_tokens=valid, options=options,
      owl=owl, apply_kwargs=task_lib.train_kwarg(task.model, False), log=log)
  report['from'] = str(init_from)
  report['wall_seconds'] = time.perf_counter() - start
  if evaluate:
    eval_fn = jax.jit(task.eval_sums)
    report['eval'] = {
        name: {split: evaluation.evaluate(task, run.mesh, p, model_state or {}, eval_fn, split)
               for split in task.eval_splits}
        for name, p in (('dense', params), ('pruned', pruned))}
    if task.dataset.task == 'lm':   # mean NLL per predicted token: exp is the perplexity
      for evals in report['eval'].values():
        for e in evals.values():
          e['perplexity'] = math.exp(e['loss'])
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  tree = {'params': jax.device_get(pruned), 'masks': jax.device_get(masks)}
  if model_state:
    tree['model_state'] = jax.device_get(model_state)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(workdir / 'state', tree, force=True)
    ckptr.wait_until_finished()
  (workdir / 'prune.json').write_text(json.dumps(
      {'config': config_lib.plain(config), 'report': report}, indent=1,
      default=lambda x: np.asarray(x).tolist()) + '\n')
  return report


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
  from sparsejax.posttrain import OWL
  return {'options': options, 'owl': OWL(**owl_args) if owl else None}


def recovery_command(config_path, config, overrides, pruned) -> str:
  """The `sparsejax finetune` line that retrains the `sparsejax prune`
  workdir `pruned` with its mask fixed: the prune's config file and
  overrides (the same model), with the pruning block turned into a fixed
  mask: the config's schedule settings that 'fixed' does not take unset and
  a nonzero `sparsity` set to 0 (the mask comes from the pruned zeros)."""
  import shlex
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


def load_pruned(workdir) -> tuple[Any, Any]:
  """(params, masks) that `run_prune` wrote, as numpy; `FixedMask(masks=masks)`
  fine-tunes with exactly that mask."""
  import pathlib
  from sparsejax.train import checkpoint as ckpt_lib
  tree = ckpt_lib.restore_raw(pathlib.Path(workdir) / 'state')
  return tree['params'], tree['masks']


def is_workdir(path) -> bool:
  """Whether `path` is a `run_prune` workdir (prune.json and its state)."""
  import pathlib
  path = pathlib.Path(path)
  return (path / 'prune.json').is_file() and (path / 'state').is_dir()


def verify_export(workdir, export_dir, batch: int = 128, report: bool = False):
  """`experiment.verify_export` for a `run_prune` workdir: the model of its
  recorded config (prune.json), its pruned params and the first `batch`
  test examples, against the export in `export_dir`."""
  import json
  import pathlib
  import ml_collections
  import numpy as np
  from sparsejax.programs import export_check
  from sparsejax.train import weights as weights_lib
  recorded = json.loads((pathlib.Path(workdir) / 'prune.json').read_text())
  s = config_lib.to_settings(ml_collections.ConfigDict(recorded['config']))
  dataset = experiment.build_dataset(s.data)
  model = experiment.build_model(s.model, dataset)
  params, model_state, _ = weights_lib.final_weights(workdir)
  x = dataset.test.get(np.arange(min(batch, len(dataset.test))))[0]
  check = export_check.verify_report(model.apply, params, model_state, x, export_dir,
                                     **task_lib.train_kwarg(model, False))
  return check if report else check['max_abs_diff']


def check_export(path, export_dir) -> dict:
  """The outputs of the export in `export_dir` against the masked dense model
  of `path` (a run, or a `run_prune` workdir with its recorded config) on test
  examples: `export_check.verify_report`'s dict, or {'not_verified': the
  `export.NotVerifiable`} for a run started from Python."""
  import warnings
  from sparsejax.programs import export
  try:
    with warnings.catch_warnings():   # the report's 'dense_leaves' says it
      warnings.simplefilter('ignore', export.CheckedDense)
      verify = verify_export if is_workdir(path) else experiment.verify_export
      return verify(path, export_dir, report=True)
  except export.NotVerifiable as e:
    return {'not_verified': e}
