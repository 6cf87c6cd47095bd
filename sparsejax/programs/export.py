"""Sparse export: a trained run's masks stripped into a compact checkpoint,
and loading it back for inference; or a Hugging Face Llama folder.

A run or `sparsejax prune` workdir is exported from its final checkpoint
(`export`) in one of the formats of `export_formats` ('csr', 'nm', 'ell',
'dense'; weights.npz or weights.safetensors plus export.json), which `load`
reads back (CSR and ELL leaves as sparse arrays) and `load_masks` gives the
masks of; `sparse_apply` runs a model on the sparse leaves and `verify`
checks its outputs against the masked dense model's (`export_check`). Or
it is written as a Hugging Face Llama folder (`export_hf`: model.safetensors
with Hugging Face names, config.json, tokenizer.json,
generation_config.json) that transformers, `sparsejax perplexity --model
DIR` and other tools load.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from sparsejax.core import tree as tree_lib
from sparsejax.programs import results as results_lib
# Re-exported: load, load_masks, sparse_apply and verify as the guides use them
# (export.load, ...), ExportError and CheckedDense as the CLI does.
from sparsejax.programs.export_check import CheckedDense, sparse_apply, verify  # noqa: F401
from sparsejax.programs.export_formats import (FORMATS, ExportError, load,  # noqa: F401
                                               load_masks, write_export)
from sparsejax.train import weights as weights_lib


class NotVerifiable(ExportError):
  """An export whose outputs cannot be checked here (the run records no
  config to rebuild its model from); the files themselves are written."""


def export(workdir, fmt: str = 'csr', out=None, safetensors: bool = False) -> dict:
  """Exports a run's final checkpoint (or a `sparsejax prune` workdir's
  pruned state) to `out` (default workdir/export_<fmt>), as weights.npz or
  with `safetensors` weights.safetensors; returns the size report."""
  if fmt not in FORMATS:
    raise ValueError(f'unknown export format {fmt!r}; choose from {list(FORMATS)}')
  params, model_state, masks = results_lib.final_weights(workdir)
  return write_export(params, model_state, masks, fmt,
                      out or pathlib.Path(workdir) / f'export_{fmt}', safetensors=safetensors)


# --- Hugging Face Llama folders ------------------------------------------------------------

def recorded_config(workdir) -> dict:
  """The config a run recorded (config.json) or a `sparsejax prune` workdir
  (prune.json), as plain JSON."""
  workdir = pathlib.Path(workdir)
  for name in ('config.json', 'prune.json'):
    path = workdir / name
    if path.is_file():
      recorded = json.loads(path.read_text())
      if 'config' not in recorded:
        raise ExportError(f'{path} records a run started from Python, not from a config: '
                          'its model is unknown here')
      return recorded['config']
  raise ExportError(f'{workdir} has no config.json or prune.json: not a sparsejax run or '
                    'prune workdir')


def llama_architecture(config: dict):
  """(`LlamaConfig`, pretrained spec or None) of a recorded config whose
  model is 'llama': `model.options.pretrained`'s architecture with the
  other options over it, as `experiment.build_model` builds the model
  (settings that are not the architecture's, e.g. dtype, remat, pool, are
  left out)."""
  from sparsejax.models import pretrained
  from sparsejax.models.llama import LlamaConfig
  model = config.get('model') or {}
  options = dict(model.get('options') or {})
  spec = options.pop('pretrained', None)
  base = {}
  if spec:
    try:
      base = dataclasses.asdict(pretrained.architecture(spec))
    except (OSError, ImportError, ValueError) as e:
      raise ExportError(f'model.options.pretrained={spec!r}: {e}') from None
  fields = {f.name for f in dataclasses.fields(LlamaConfig)}
  return LlamaConfig(**{**base, **{k: v for k, v in options.items() if k in fields}}), spec


def export_hf(workdir, out) -> dict:
  """Writes a run's (or `sparsejax prune` workdir's, or PEFT run's merged)
  Llama-family model to the folder `out` as Hugging Face names
  (`llama_weights.save_hf`: model.safetensors, config.json), the tokenizer of
  `model.options.pretrained` (tokenizer.json) and its end-of-sequence ids
  (generation_config.json, where `lm_tokenizer.eos_ids` and transformers
  read them), so that `sparsejax perplexity --model out`, transformers and
  other tools load it. Reads the folder back: 'max_abs_diff' (0.0 for a
  faithful write) and 'same_config' in the returned report."""
  from sparsejax.models import llama_weights as lw, pretrained
  workdir = pathlib.Path(workdir)
  config = recorded_config(workdir)
  name = (config.get('model') or {}).get('name')
  if name != 'llama':
    raise ExportError(f"--hf writes Llama-family models (model 'llama'); {workdir} is a run "
                      f'of model {name!r}: export it with --format')
  arch, spec = llama_architecture(config)
  if not spec:
    raise ExportError(f"{workdir}: model 'llama' without model.options.pretrained; --hf takes "
                      'the tokenizer from that model, and this run names none')
  try:
    tokenizer, eos, _ = pretrained.load_tokenizer(spec)
  except (OSError, ImportError, ValueError) as e:
    raise ExportError(f'model.options.pretrained={spec!r}: {e}') from None
  params, _ = weights_lib.load_weights(workdir, lw.abstract_params(arch))
  out = pathlib.Path(out)
  lw.save_hf(out, params, arch, tokenizer)
  if eos:
    (out / 'generation_config.json').write_text(json.dumps(
        {'eos_token_id': eos[0] if len(eos) == 1 else list(eos)}, indent=2) + '\n')
  back, back_arch = lw.load_hf(out)
  mine = dict(tree_lib.leaves_with_paths(params))
  diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(mine[p], np.float64)),
                          initial=0.0)) for p, x in tree_lib.leaves_with_paths(back))
  return {'folder': str(out), 'pretrained': spec, 'files': sorted(f.name for f in out.iterdir()),
          'bytes': (out / 'model.safetensors').stat().st_size, 'eos_ids': list(eos),
          'max_abs_diff': diff, 'same_config': back_arch == arch}
