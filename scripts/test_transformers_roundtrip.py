#!/usr/bin/env python3
"""Round trip through Hugging Face transformers: Smelter merges checkpoints that `save_pretrained` wrote,
and `from_pretrained` loads the merge back and runs it.

    python3 scripts/test_transformers_roundtrip.py [--smelter "COMMAND"] [--device cpu|cuda|auto]

A tiny random LlamaForCausalLM (bf16) is saved as a sharded safetensors checkpoint (index file and
several shards), with two experts (the base plus small random task vectors). `smelter merge` runs a
task_arithmetic and a TIES config on them. Checked:
  - the independent `safetensors` reader opens every output shard; the index covers every tensor once;
  - task arithmetic equals a float64 torch computation rounded to bf16 (at most one bf16 step apart);
  - `from_pretrained` loads both merges with no missing or unexpected weights, logits are finite,
    `generate` runs, and the TIES merge differs from the base.
COMMAND defaults to the built CLI jar through ./smelter-dev. Needs torch, transformers and safetensors;
without them it prints why and exits 0. Prints one line per check and a closing 'N passed, N failed';
exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from typing import Callable, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REQUIRED = ("torch", "transformers", "safetensors")
DEFAULT_SMELTER = (f"{ROOT}/smelter-dev java --enable-native-access=ALL-UNNAMED "
                   f"-jar {ROOT}/java/target/smelter-cli.jar")
WEIGHTS = (0.6, 0.3)


def build_checkpoints(root: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    base = LlamaForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    # Small shards: the checkpoints come with an index file and several shards, as large models do.
    base.save_pretrained(os.path.join(root, "base"), safe_serialization=True, max_shard_size="20KB")
    for i, name in enumerate(("expert-a", "expert-b")):
        expert = LlamaForCausalLM(config).to(torch.bfloat16)
        expert.load_state_dict(base.state_dict())
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.01)
        expert.save_pretrained(os.path.join(root, name), safe_serialization=True, max_shard_size="20KB")
    with open(os.path.join(root, "ta.yml"), "w") as f:
        f.write(f"""merge_method: task_arithmetic
base_model: base
models:
  - model: expert-a
    parameters: {{weight: {WEIGHTS[0]}}}
  - model: expert-b
    parameters: {{weight: {WEIGHTS[1]}}}
dtype: bfloat16
""")
    with open(os.path.join(root, "ties.yml"), "w") as f:
        f.write("""merge_method: ties
base_model: base
models:
  - model: expert-a
    parameters: {weight: 0.5, density: 0.5}
  - model: expert-b
    parameters: {weight: 0.5, density: 0.5}
dtype: bfloat16
""")


def smelter_merge(command: str, device: str, config: str, out: str) -> None:
    cmd = shlex.split(command) + ["merge", config, "-o", out, "--device", device, "-q", "--max-shard-size", "30KB"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"smelter merge failed ({done.returncode}): {done.stderr.strip()}")


def load_state(directory: str):
    """Every tensor of a checkpoint through the safetensors package, and the shard each came from."""
    from safetensors import safe_open

    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    else:
        weight_map, shards = None, ["model.safetensors"]
    tensors, where = {}, {}
    for shard in shards:
        with safe_open(os.path.join(directory, shard), framework="pt") as f:
            assert f.metadata() is not None and f.metadata().get("format") == "pt", f"{shard}: metadata {f.metadata()}"
            for key in f.keys():
                assert key not in tensors, f"{key} appears in two shards"
                tensors[key] = f.get_tensor(key)
                where[key] = shard
    if weight_map is not None:
        assert weight_map == where, "the index does not match the shards' contents"
    return tensors, len(shards)


def check_output_reads_independently(root: str) -> None:
    base, _ = load_state(os.path.join(root, "base"))
    merged, shards = load_state(os.path.join(root, "merged-ta"))
    assert shards > 1, f"expected a sharded output, got {shards} shard"
    assert set(merged) == set(base), f"tensor names differ: {set(merged) ^ set(base)}"
    for k, t in merged.items():
        assert t.shape == base[k].shape and t.dtype == base[k].dtype, f"{k}: {t.dtype} {tuple(t.shape)}"


def check_task_arithmetic_values(root: str) -> None:
    import torch

    base, _ = load_state(os.path.join(root, "base"))
    experts = [load_state(os.path.join(root, e))[0] for e in ("expert-a", "expert-b")]
    merged, _ = load_state(os.path.join(root, "merged-ta"))
    worst = 0.0
    for k, b in base.items():
        b64 = b.to(torch.float64)
        ref = b64 + sum(w * (x[k].to(torch.float64) - b64) for w, x in zip(WEIGHTS, experts))
        got = merged[k].to(torch.float64)
        # One bf16 step at the reference's magnitude (f32 accumulation may round the other way at a tie).
        step = torch.clamp(ref.abs(), min=2.0 ** -126) * 2.0 ** -7
        excess = ((got - ref).abs() / step).max().item()
        worst = max(worst, excess)
        assert excess <= 1.0, f"{k}: {excess:.2f} bf16 steps from the float64 reference"
    print(f"    largest difference: {worst:.3f} bf16 steps")


def check_loads_and_runs(root: str, name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(os.path.join(root, name), torch_dtype=torch.bfloat16,
                                                       output_loading_info=True)
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(what), f"{name}: {what} {info[what]}"
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits.float()).all(), f"{name}: non-finite logits"
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + 4 or int(out[0, -1]) == 2, f"{name}: generate gave {out.shape}"
    if name == "merged-ties":
        base = AutoModelForCausalLM.from_pretrained(os.path.join(root, "base"), torch_dtype=torch.bfloat16)
        with torch.no_grad():
            assert not torch.equal(base(ids).logits, logits), "the TIES merge left the base unchanged"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smelter", default=os.environ.get("SMELTER", DEFAULT_SMELTER),
                        help="command that runs the smelter CLI (default: the built jar)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    args = parser.parse_args()
    missing = [m for m in REQUIRED if not _importable(m)]
    if missing:
        print(f"SKIP: test_transformers_roundtrip needs {', '.join(missing)} (not installed); nothing was run")
        return 0
    root = tempfile.mkdtemp(prefix="smelter-roundtrip-")
    checks: List[Tuple[str, Callable[[], None]]] = [
        ("save_pretrained writes sharded base and experts", lambda: build_checkpoints(root)),
        ("smelter merges task_arithmetic", lambda: smelter_merge(args.smelter, args.device, f"{root}/ta.yml", f"{root}/merged-ta")),
        ("smelter merges ties", lambda: smelter_merge(args.smelter, args.device, f"{root}/ties.yml", f"{root}/merged-ties")),
        ("safetensors reads every output shard; the index matches", lambda: check_output_reads_independently(root)),
        ("task arithmetic equals the float64 reference", lambda: check_task_arithmetic_values(root)),
        ("from_pretrained loads and runs the task_arithmetic merge", lambda: check_loads_and_runs(root, "merged-ta")),
        ("from_pretrained loads and runs the ties merge", lambda: check_loads_and_runs(root, "merged-ties")),
    ]
    passed = failed = 0
    try:
        for name, check in checks:
            try:
                check()
                passed += 1
                print(f"ok   {name}")
            except Exception:  # one line per check; the traceback says why
                failed += 1
                print(f"FAIL {name}")
                traceback.print_exc()
                if passed < 3:  # nothing to check without the checkpoints and merges
                    break
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
