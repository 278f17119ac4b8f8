#!/usr/bin/env python3
"""Self-test for scripts/dump_activations.py on a tiny random Llama model.

    python3 scripts/test_dump_activations.py

Needs torch, transformers, safetensors and tokenizers; without them it prints why and exits 0.
Prints one line per check and a closing 'N passed, N failed'; exits 1 if any check failed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import traceback
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIRED = ("torch", "transformers", "safetensors", "tokenizers")

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "hello", "world",
         "der", "hund", "lief", "weit", "|", "."]


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("dump_activations", os.path.join(HERE, "dump_activations.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the file runs
    spec.loader.exec_module(module)
    return module


def build_tokenizer(directory: str) -> Any:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab: Dict[str, int] = {"[PAD]": 0, "[UNK]": 1, "<s>": 2, "</s>": 3}
    for w in WORDS:
        vocab[w] = len(vocab)
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(directory)
    return fast


def build_model(directory: str, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so that layers visibly change the states
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    model.save_pretrained(directory)


class Reference:
    """The model's own outputs for one unpadded sequence at a time."""

    def __init__(self, model_dir: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir)
        self.model.eval()
        self.layers = self.model.config.num_hidden_layers

    def run(self, ids: List[int]) -> Tuple[List[Any], List[Any], List[Any]]:
        """(hidden_states tuple, per-layer decoder outputs, per-layer silu(gate_proj(x))) for one sequence."""
        torch = self.torch
        mlp_inputs: Dict[int, Any] = {}
        layer_outputs: Dict[int, Any] = {}
        handles = []
        for i, layer in enumerate(self.model.model.layers):
            handles.append(layer.mlp.register_forward_hook(
                lambda m, inp, out, i=i: mlp_inputs.__setitem__(i, inp[0].detach())))
            handles.append(layer.register_forward_hook(
                lambda m, inp, out, i=i: layer_outputs.__setitem__(i, (out[0] if isinstance(out, tuple) else out).detach())))
        try:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
                gates = [torch.nn.functional.silu(self.model.model.layers[i].mlp.gate_proj(mlp_inputs[i]))[0]
                         for i in range(self.layers)]
        finally:
            for h in handles:
                h.remove()
        states = [s[0] for s in out.hidden_states]
        return states, [layer_outputs[i][0] for i in range(self.layers)], gates


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            self.failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok   {name}")


def load(path: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return load_file(path), metadata


def close(a: Any, b: Any, atol: float = 1e-5) -> None:
    import torch

    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4), \
        f"max abs diff {(a.float() - b.float()).abs().max().item()}"


def main() -> int:
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"SKIP: test_dump_activations needs {', '.join(missing)} (not installed); nothing was run")
        return 0

    import torch

    da = load_script()
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="dump-acts-test-")
    model_dir = os.path.join(tmp, "tiny-llama")
    tokenizer = build_tokenizer(model_dir)
    build_model(model_dir, len(tokenizer))
    ref = Reference(model_dir)
    n_layers = 2

    sentences = ["the cat sat on the mat", "hello", "a dog ran far away ."]
    text_path = os.path.join(tmp, "en.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(sentences[0] + "\n\n" + sentences[1] + "\n   \n" + sentences[2] + "\n")
    pairs = [{"source": "the cat sat", "target": "der hund lief weit"}, {"source": "hello world", "target": "weit"}]
    pairs_path = os.path.join(tmp, "pairs.jsonl")
    with open(pairs_path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
        f.write("\n")

    ids = [tokenizer(s)["input_ids"] for s in sentences]
    refs = [ref.run(x) for x in ids]
    out_dir = os.path.join(tmp, "acts")

    def common_args(out: str) -> List[str]:
        return ["--model", model_dir, "--out", out, "--batch-size", "2", "--device", "cpu"]

    # ---- token level, plain text, with --mlp
    tok_path = os.path.join(out_dir, "tiny-en.safetensors")

    def token_level() -> None:
        rc = da.main(common_args(tok_path) + ["--texts", text_path, "--mlp", "--language", "en"])
        assert rc == 0, f"exit code {rc}"
        assert sorted(os.listdir(out_dir)) == ["tiny-en.safetensors"], os.listdir(out_dir)
        t, meta = load(tok_path)
        expected_keys = {"sentence_ids"} | {f"hidden.{L}" for L in range(n_layers)} | {f"mlp_act.{L}" for L in range(n_layers)}
        assert set(t) == expected_keys, sorted(t)
        T = sum(len(x) for x in ids)
        assert T == 7 + 2 + 7, T  # BOS + words
        for L in range(n_layers):
            assert t[f"hidden.{L}"].shape == (T, 16) and t[f"hidden.{L}"].dtype == torch.float32
            assert t[f"mlp_act.{L}"].shape == (T, 24) and t[f"mlp_act.{L}"].dtype == torch.float32
        assert t["sentence_ids"].dtype == torch.int64
        assert t["sentence_ids"].tolist() == [i for i, x in enumerate(ids) for _ in x]
        assert meta == {"smelter.format": "activations/1", "model": model_dir, "pooling": "token", "layers": "2",
                        "hidden_size": "16", "intermediate_size": "24", "language": "en", "texts": "en.txt"}, meta

    def token_values() -> None:
        t, _ = load(tok_path)
        for L in range(n_layers):
            expected = torch.cat([r[0][L + 1] for r in refs])
            wrong = torch.cat([r[0][L] for r in refs])
            assert (expected - wrong).abs().max().item() > 1e-2, "test model too weak to tell layers apart"
            close(t[f"hidden.{L}"], expected)
            close(t[f"mlp_act.{L}"], torch.cat([r[2][L] for r in refs]))
            if L < n_layers - 1:  # the last entry of hidden_states is after the final norm
                close(t[f"hidden.{L}"], torch.cat([r[1][L] for r in refs]))

    checks.run("token level: keys, shapes, dtypes, sentence_ids, metadata", token_level)
    checks.run("token level: hidden.L == hidden_states[L+1], mlp_act == silu(gate_proj(x))", token_values)

    # ---- mean pooling
    def mean_pooling() -> None:
        out = os.path.join(out_dir, "tiny-en-mean.safetensors")
        assert da.main(common_args(out) + ["--texts", text_path, "--pooling", "mean"]) == 0
        t, meta = load(out)
        assert set(t) == {f"hidden.{L}" for L in range(n_layers)}, sorted(t)
        assert meta["pooling"] == "mean" and "intermediate_size" not in meta and meta["language"] == ""
        for L in range(n_layers):
            assert t[f"hidden.{L}"].shape == (3, 16)
            expected = torch.stack([r[0][L + 1].mean(dim=0) for r in refs])
            close(t[f"hidden.{L}"], expected)

    checks.run("mean pooling equals the per-sentence mean of hidden_states[L+1]", mean_pooling)

    # ---- dtype conversion
    def dtype_bf16() -> None:
        out = os.path.join(out_dir, "tiny-en-bf16.safetensors")
        assert da.main(common_args(out) + ["--texts", text_path, "--mlp", "--dtype", "bf16"]) == 0
        t, _ = load(out)
        f32, _ = load(tok_path)
        for key in f32:
            if key.startswith(("hidden.", "mlp_act.")):
                assert t[key].dtype == torch.bfloat16, (key, t[key].dtype)
                assert torch.equal(t[key], f32[key].to(torch.bfloat16)), key
        assert t["sentence_ids"].dtype == torch.int64

    checks.run("--dtype bf16 converts hidden and mlp_act only", dtype_bf16)

    # ---- jsonl pairs with masks
    def pair_ids(sep: List[int]) -> List[Tuple[List[int], List[int], List[int]]]:
        result = []
        for p in pairs:
            s = tokenizer(p["source"], add_special_tokens=False)["input_ids"]
            g = tokenizer(p["target"], add_special_tokens=False)["input_ids"]
            full = [2] + s + sep + g
            src = [0] + [1] * len(s) + [0] * (len(sep) + len(g))
            tgt = [0] * (1 + len(s) + len(sep)) + [1] * len(g)
            result.append((full, src, tgt))
        return result

    def pairs_masks(extra: List[str], sep: List[int]) -> None:
        out = os.path.join(out_dir, "tiny-pairs.safetensors")
        assert da.main(common_args(out) + ["--texts", pairs_path, "--mlp", "--language", "en-de"] + extra) == 0
        t, meta = load(out)
        expected = pair_ids(sep)
        T = sum(len(e[0]) for e in expected)
        assert set(t) == {"sentence_ids", "mask.source", "mask.target"} | \
            {f"hidden.{L}" for L in range(n_layers)} | {f"mlp_act.{L}" for L in range(n_layers)}, sorted(t)
        assert t["mask.source"].dtype == torch.uint8 and t["mask.target"].dtype == torch.uint8
        assert t["mask.source"].tolist() == [v for e in expected for v in e[1]], t["mask.source"].tolist()
        assert t["mask.target"].tolist() == [v for e in expected for v in e[2]], t["mask.target"].tolist()
        assert t["sentence_ids"].tolist() == [i for i, e in enumerate(expected) for _ in e[0]]
        assert meta["texts"] == "pairs.jsonl" and meta["language"] == "en-de"
        pair_refs = [ref.run(e[0]) for e in expected]
        for L in range(n_layers):
            assert t[f"hidden.{L}"].shape == (T, 16)
            close(t[f"hidden.{L}"], torch.cat([r[0][L + 1] for r in pair_refs]))
            close(t[f"mlp_act.{L}"], torch.cat([r[2][L] for r in pair_refs]))

    checks.run("jsonl pairs: masks, sentence_ids, hidden states (default newline separator)",
               lambda: pairs_masks([], []))
    checks.run("jsonl pairs: separator tokens belong to neither mask",
               lambda: pairs_masks(["--separator", " | "], [tokenizer.convert_tokens_to_ids("|")]))

    # ---- limits
    def limits() -> None:
        out = os.path.join(out_dir, "tiny-limits.safetensors")
        # 7 + 2 + 7 tokens; a budget of 10 keeps the first two sentences whole and stops there
        assert da.main(common_args(out) + ["--texts", text_path, "--max-tokens", "10"]) == 0
        t, _ = load(out)
        assert t["sentence_ids"].tolist() == [0] * 7 + [1] * 2, t["sentence_ids"].tolist()
        assert da.main(common_args(out) + ["--texts", text_path, "--max-length", "3"]) == 0
        t, _ = load(out)
        assert t["sentence_ids"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2], t["sentence_ids"].tolist()
        close(t["hidden.1"][:3], refs[0][0][2][:3])  # causal: a prefix's states do not depend on what follows

    checks.run("--max-tokens keeps whole sentences; --max-length truncates", limits)

    # ---- errors
    def errors() -> None:
        out = os.path.join(out_dir, "never.safetensors")
        try:
            da.main(common_args(out) + ["--texts", text_path, "--mlp", "--pooling", "mean"])
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError("--mlp with --pooling mean was accepted")
        assert da.main(common_args(out) + ["--texts", os.path.join(tmp, "missing.txt")]) == 2
        assert not os.path.exists(out)
        from transformers import GPT2Config, GPT2LMHeadModel
        gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=32, n_positions=32))
        try:
            da.find_act_modules(gpt2)
        except da.DumpError as e:
            assert "model.model.layers[L].mlp.act_fn" in str(e), str(e)
        else:
            raise AssertionError("GPT-2 accepted for --mlp")
        assert len(da.find_act_modules(ref.model)) == n_layers
        leftovers = [n for n in os.listdir(out_dir) if n.endswith(".tmp")]
        assert not leftovers, leftovers

    checks.run("errors: --mlp with mean pooling, missing input, architecture without act_fn", errors)

    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
