"""What the command line prints of a program's result: the evaluation
table of `sparsejax train` and `eval`, the stages of `finetune`, the
pruning report of `prune`, the sizes and checks of `export` and `merge`,
and the figures of `perplexity` and `generate`. Each takes the dict the
program returns; the checks (`export_check`, `export_hf`, `peft_delta`)
return (the text, the failure or None)."""

from __future__ import annotations

PEFT_TOLERANCE = 1e-5   # max |delta merged - merged.npz| over the weights (rows: exactly 0)


def one_line(error: Exception) -> str:
  """An error message on one line, cut to a readable length."""
  text = ' '.join(str(error).split())
  return text if len(text) <= 600 else text[:597] + '...'


def results_table(summary: dict) -> str:
  """Loss, accuracy and examples per split, and the weights kept."""
  lines = ['| split | loss | accuracy | examples |', '|---|---|---|---|']
  for split, e in summary['eval'].items():
    lines.append(f"| {split} | {e['loss']:.4f} | {e['accuracy']:.4f} | {e['examples']} |")
  lines.append('')
  lines.append(f"weights kept: {summary['active']:,} of {summary['prunable']:,} prunable "
               f"(density {summary['density']:.4f}, sparsity {1 - summary['density']:.4f})")
  return '\n'.join(lines)


def finetune(row: dict) -> str:
  """The final metrics (and those after pruning, before fine-tuning) of a
  fine-tuning row, then its PEFT budget or the weights kept."""
  keys = sorted(row['final'])
  lines = ['| stage | ' + ' | '.join(keys) + ' |', '|---|' + '---|' * len(row['final'])]
  if row.get('after_pruning'):
    lines.append('| after pruning, before fine-tuning | ' + ' | '.join(
        f"{row['after_pruning'].get(k, float('nan')):.4f}" for k in keys) + ' |')
  lines.append('| after fine-tuning | ' + ' | '.join(f"{row['final'][k]:.4f}" for k in keys)
               + ' |')
  if 'peft' in row:
    lines.append('')
    lines += [f'{k}: {v}' for k, v in row['peft'].items()]
  else:
    lines.append(f"\nweights kept: {100 * row['density']:.2f}% of the prunable weights")
  return '\n'.join(lines)


def prune(report: dict) -> str:
  """A post-training pruning report (`prune_run.run_prune`): what was pruned
  from what, OWL's block sparsities, the dense and pruned evaluations."""
  lines = [f"\n{report['method']} {report['target']}: {len(report['layers'])} matrices pruned "
           f"in {report['wall_seconds']:.1f} s from {report['calibration_tokens']:.0f} "
           f"calibration tokens; left dense: {', '.join(report['left_dense']) or 'none'}"]
  if report.get('owl'):
    owl = report['owl']
    spars = [v for v in owl['sparsities'].values() if v is not None]
    lines.append(f"OWL (M={owl['m']:g}, lambda={owl['lambda']:g}): block sparsities "
                 f"{min(spars):.4f}..{max(spars):.4f}, {100 * report['pruned_fraction']:.2f}% "
                 'of the pruned matrices pruned')
  for name, evals in report.get('eval', {}).items():
    lines.append(f'{name:>7}: ' + ', '.join(f'{split} loss {e["loss"]:.4f}' + (
        f' accuracy {e["accuracy"]:.4f}' if 'accuracy' in e else '') + (
        f' perplexity {e["perplexity"]:.4f}' if 'perplexity' in e else '')
        for split, e in evals.items()))
  return '\n'.join(lines)


def export(rep: dict) -> str:
  """An export's file, its size against dense, and how each leaf is stored."""
  return '\n'.join([f"{rep['file']}: {rep['bytes_on_disk']:,} bytes on disk, dense "
                    f"{rep['dense_bytes_on_disk']:,} ({100 * rep['ratio']:.1f}%)"]
                   + [f'  {leaf}: {kind}' for leaf, kind in rep['leaves'].items()])


def export_check(check: dict) -> tuple[str, str | None]:
  """The check of an export's outputs (`prune_run.check_export`): fails past
  its tolerance; one that could not be run is said to be unverified."""
  if 'not_verified' in check:
    return f"outputs not verified: {one_line(check['not_verified'])}", None
  lines = []
  if check['dense_leaves']:
    lines.append(f"sparse products not exercised: {', '.join(check['dense_leaves'])} stored "
                 'sparse but used by no nn.Dense / nnx.Linear; checked the export loaded dense')
  what = (f"max |output - masked dense output| on {check['examples']} test examples: "
          f"{check['max_abs_diff']:.2e}")
  lines.append(f"{what} (tolerance {check['tolerance']:.1e})")
  failure = None if check['ok'] else (
      f"export check failed: {what} exceeds the tolerance {check['tolerance']:.1e} "
      '(1e-5 * max(1, max |output|))')
  return '\n'.join(lines), failure


def export_hf(rep: dict) -> tuple[str, str | None]:
  """`export.export_hf`'s folder, read back: fails unless its weights are the
  run's bitwise and its config.json gives the same model."""
  eos = (f"end-of-sequence ids {rep['eos_ids']}" if rep['eos_ids'] else
         'no end-of-sequence ids known (no generation_config.json)')
  what = (f"read back: max |difference| {rep['max_abs_diff']:.2e}, same architecture: "
          f"{rep['same_config']}")
  text = (f"{rep['folder']}: {', '.join(rep['files'])}; model.safetensors {rep['bytes']:,} "
          f"bytes; tokenizer of {rep['pretrained']}, {eos}\n{what}")
  if rep['max_abs_diff'] != 0.0 or not rep['same_config']:   # NaN fails too
    return text, f"--hf check failed: {what}: the folder does not hold the run's model"
  return text, None


def peft_delta(rep: dict) -> tuple[str, str | None]:
  """`peft_checkpoint.save_delta`'s delta and its size against the full model;
  where the run wrote merged.npz, fails unless the delta rebuilds it within
  PEFT_TOLERANCE."""
  lines = [f"{rep['delta']}: {rep['method']} delta ({rep.get('layout', 'sparsejax')} layout), "
           f"{rep['delta_bytes']:,} bytes on disk; full "
           f"model {rep['full_array_bytes']:,} bytes of arrays ({100 * rep['ratio']:.2f}%)"]
  failure = None
  if 'merged_npz_bytes' in rep:
    diff = rep['max_abs_diff_vs_merged_npz']
    what = f'max |delta merged - merged.npz| {diff:.2e}'
    lines.append(f"merged.npz of the run: {rep['merged_npz_bytes']:,} bytes; {what} "
                 f'(tolerance {PEFT_TOLERANCE:.0e})')
    if not diff <= PEFT_TOLERANCE:   # NaN fails too
      failure = (f'delta check failed: {what} exceeds the tolerance {PEFT_TOLERANCE:.0e}: '
                 'the delta does not rebuild the run')
  return '\n'.join(lines), failure


def merge(rep: dict) -> str:
  """`peft_checkpoint.write_merged`'s full model and its delta's share of it."""
  return (f"{rep['merged']}: full model, {rep['merged_bytes']:,} bytes; delta {rep['delta']}: "
          f"{rep['delta_bytes']:,} bytes "
          f"({100 * rep['delta_bytes'] / rep['merged_bytes']:.2f}%)")


def perplexity(row: dict) -> str:
  """`perplexity.run`'s row: the perplexity, its windows and speed."""
  return (f"perplexity {row['perplexity']:.4f} over {row['windows']} of "
          f"{row['total_windows']} windows of {row['seqlen']} tokens "
          f"({row['predicted_tokens']} predicted); {row['tokens_per_second']:.1f} tokens/s "
          f"({row['seconds']:.1f} s, compile {row['compile_seconds']:.1f} s)")


def generate_speed(row: dict) -> str:
  """`generate.run`'s new tokens and speed (the command prints it to stderr,
  after the text)."""
  return (f"\n[{row['new_tokens']} new tokens in {row['seconds']:.2f} s, "
          f"{row['tokens_per_second']:.1f} tokens/s]")
