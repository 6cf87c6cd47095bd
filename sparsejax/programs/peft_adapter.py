"""LoRA deltas in the PEFT library's adapter layout, which Hugging Face PEFT
loads (`PeftModel.from_pretrained(base, folder)`): `write_adapter` writes
it for `peft_checkpoint.write_delta(..., layout='peft')`, and
`read_adapter` reads it back for `peft_checkpoint.merge`.

- `adapter_model.safetensors`: per target Linear layer,
  'base_model.model.<module>.lora_A.weight' (r, in_features) and
  '...lora_B.weight' (out_features, r), torch's (out, in) convention, so
  that PEFT's W + (lora_alpha / r) B A is our merged weight transposed: with
  our W + scale * A_ours @ B_ours on Flax kernels (in, out), A = A_ours.T,
  B = B_ours.T and lora_alpha = scale * r (`finetune.alpha`, where 0 means
  alpha = r, i.e. scale 1). The head is written as PEFT writes
  `modules_to_save`: 'base_model.model.<module>.weight' / '.bias', and must
  be whole modules.
- `adapter_config.json`: peft_type LORA, r, lora_alpha, target_modules (the
  full module names), modules_to_save, bias 'none', fan_in_fan_out false,
  lora_dropout 0, task_type (CAUSAL_LM for a Llama), base_model_name_or_path
  (the manifest's base path; for a GGUF base transformers loads that file
  with `gguf_file`).
- module names: for a `llama` model Hugging Face's
  ('model.layers.N.self_attn.q_proj', from `llama_weights.hf_mapping`); for
  other models ours: the leaf path with '/' -> '.' and without '/kernel'
  ('block_0/mlp/kernel' -> 'block_0.mlp'; params 'kernel', 'embedding' and
  'scale' are named 'weight'), which a torch model of the same layout would
  have to share.
- `delta.json`, the same manifest with 'layout': 'peft' and each leaf's
  name there, so that `peft_checkpoint.merge` reads the folder back;
  `model_state.safetensors` when the run has model state (PEFT has no place
  for it).
Row, unstructured and full deltas have no PEFT equivalent and keep the
sparsejax layout; so do LoRA factors of conv kernels (PEFT's conv LoRA is a
pair of convolutions, not written here).
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from sparsejax.programs.export_formats import _nest
from sparsejax.programs.peft_base import DeltaError
from sparsejax.programs.peft_methods import Method
from sparsejax.train import weights as weights_lib

ADAPTER_CONFIG, ADAPTER_WEIGHTS = 'adapter_config.json', 'adapter_model.safetensors'
ADAPTER_STATE = 'model_state.safetensors'    # the peft layout's model state, when any
PREFIX = 'base_model.model.'                # PEFT's key prefix for a wrapped model


def module_names(paths, naming: str | None) -> dict[str, tuple[str, bool]]:
  """{leaf path: (torch-style key, transposed)} for the leaves `paths` of a
  model: Hugging Face's Llama names (`llama_weights.hf_mapping`, Linear
  weights transposed) when `naming` is 'llama', else ours: the leaf path
  with '/' -> '.', 'kernel' / 'embedding' / 'scale' named 'weight' and 2-D
  kernels transposed (torch's Linear is (out, in))."""
  paths = list(paths)
  if naming == 'llama':
    from sparsejax.models import llama_weights as lw
    rows = {path: (key, fn is not None) for key, path, fn in lw.hf_mapping(_llama_of(paths))}
    unnamed = [p for p in paths if p not in rows]
    if unnamed:
      raise DeltaError(f'leaf {unnamed[0]!r} has no Hugging Face Llama name: is this a '
                       "'llama' model?")
    return {p: rows[p] for p in paths}
  out = {}
  for p in paths:
    *module, leaf = p.split('/')
    name = {'kernel': 'weight', 'embedding': 'weight', 'scale': 'weight'}.get(leaf, leaf)
    out[p] = ('.'.join([*module, name]), leaf == 'kernel')
  return out


def _llama_of(paths):
  """A `LlamaConfig` with the structure of these Llama leaf paths (layers,
  tied head, biases): all that names the leaves."""
  from sparsejax.models.llama import LlamaConfig
  blocks = [int(m.group(1)) for p in paths for m in [re.match(r'block_(\d+)/', p)] if m]
  if not blocks:
    raise DeltaError("no 'block_N/' leaves: not a 'llama' model")
  return LlamaConfig(num_layers=max(blocks) + 1, tie_embeddings='output/kernel' not in paths,
                     qkv_bias='block_0/attention/query/bias' in paths,
                     out_bias='block_0/attention/out/bias' in paths,
                     mlp_bias='block_0/mlp/gate/bias' in paths)


def write_adapter(out: pathlib.Path, method: Method, trainable: dict, leaves: dict,
                   base: dict, state: dict, naming: str | None) -> dict:
  """Writes adapter_model.safetensors, adapter_config.json (and
  model_state.safetensors when `state`); returns the manifest's additions."""
  names = module_names(leaves, naming)
  arrays, targets, saved = {}, {}, {}
  for p, ab in trainable['lora'].items():
    key, transposed = names[p]
    if not (transposed and len(leaves[p]['shape']) == 2 and key.endswith('.weight')):
      raise DeltaError(f"leaf {p!r} ({key}) is not a Linear layer's 2-D kernel: the PEFT "
                       'layout holds LoRA on Linear layers only; write the sparsejax layout')
    module = key[:-len('.weight')]
    arrays[f'{PREFIX}{module}.lora_A.weight'] = np.asarray(ab['a']).T     # (r, in)
    arrays[f'{PREFIX}{module}.lora_B.weight'] = np.asarray(ab['b']).T     # (out, r)
    targets[p] = module
  for p, x in trainable['head'].items():
    key, transposed = names[p]
    arrays[PREFIX + key] = np.asarray(x).T if transposed else np.asarray(x)
    saved[p] = key
  modules = sorted({key.rsplit('.', 1)[0] for key in saved.values()})
  partial = [p for p, (key, _) in names.items()
             if key.rsplit('.', 1)[0] in modules and p not in saved]
  if partial:
    raise DeltaError(f'the head trains part of the module holding {partial[0]!r}; PEFT saves '
                     'whole modules (modules_to_save): make finetune.head match all of it, or '
                     'write the sparsejax layout')
  weights_lib.save_safetensors(out / ADAPTER_WEIGHTS, arrays, {'format': 'pt'})
  if state:
    weights_lib.save_safetensors(out / ADAPTER_STATE, state, {'format': 'sparsejax-state'})
  alpha = method.scale * method.rank         # scale = alpha / r, as in PEFT
  if abs(alpha - round(alpha)) <= 1e-9 * max(1.0, abs(alpha)):
    alpha = int(round(alpha))                # (alpha / r) * r back to the integer given
  config = {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM' if naming == 'llama' else None,
            'base_model_name_or_path': base.get('path'), 'r': method.rank,
            'lora_alpha': alpha,
            'target_modules': sorted(targets.values()), 'lora_dropout': 0.0, 'bias': 'none',
            'fan_in_fan_out': False, 'modules_to_save': modules or None,
            'init_lora_weights': True, 'use_rslora': False, 'use_dora': False,
            'inference_mode': True}
  (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + '\n')
  return {'layout': 'peft', 'adapter': {'naming': naming or 'sparsejax', 'lora': targets,
                                        'head': {p: list(names[p]) for p in saved}}}


def read_adapter(delta: pathlib.Path, manifest: dict) -> tuple[dict, dict]:
  """(trainable tree, model_state) of a peft-layout folder, the transposes
  undone; its adapter_config.json must still say the manifest's r and alpha."""
  config = json.loads((delta / ADAPTER_CONFIG).read_text())
  m = manifest['method']
  if config.get('r') != m['rank'] or not np.isclose(config.get('lora_alpha', np.nan),
                                                    m['scale'] * m['rank']):
    raise DeltaError(f"{delta / ADAPTER_CONFIG}: r={config.get('r')}, lora_alpha="
                     f"{config.get('lora_alpha')} differ from the delta's rank {m['rank']} and "
                     f"scale {m['scale']}")
  arrays = weights_lib.read_arrays(delta / ADAPTER_WEIGHTS)
  adapter = manifest['adapter']
  lora = {p: {'a': arrays[f'{PREFIX}{mod}.lora_A.weight'].T,
              'b': arrays[f'{PREFIX}{mod}.lora_B.weight'].T}
          for p, mod in adapter['lora'].items()}
  head = {p: arrays[PREFIX + key].T if transposed else arrays[PREFIX + key]
          for p, (key, transposed) in adapter['head'].items()}
  state = {}
  if (delta / ADAPTER_STATE).is_file():
    state = weights_lib.read_arrays(delta / ADAPTER_STATE)
  return {'head': head, 'lora': lora}, _nest(state)
