#!/usr/bin/env python3
"""Dump per-layer activations of a causal LM into a Smelter activation file.

The file layout (format ``activations/1``) is described in docs/ACTIVATIONS.md.
It is read by ``smelter cka`` (``hidden.*``) and ``smelter neurons`` (``mlp_act.*``).

Examples:
    python3 scripts/dump_activations.py --model ./base --texts en.txt --out acts/base-en.safetensors
    python3 scripts/dump_activations.py --model ./base --texts pairs.jsonl --out acts/base-pairs.safetensors --mlp
    python3 scripts/dump_activations.py --model ./base --texts en.txt --out acts/base-en-mean.safetensors --pooling mean

Requires torch, transformers and safetensors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

FORMAT = "activations/1"
ACT_FN_PATH = "model.model.layers[L].mlp.act_fn"
DTYPE_NAMES = ("f32", "f16", "bf16")


class DumpError(Exception):
    """A usage, input or model error reported to the user without a traceback."""


@dataclass
class Pair:
    source: str
    target: str


@dataclass
class Example:
    """One input sentence, tokenised: ids in model order and named [start, end) spans."""

    ids: List[int]
    spans: Dict[str, Tuple[int, int]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- input


def read_texts(path: str) -> Union[List[str], List[Pair]]:
    """Plain text: one sentence per line, blank lines skipped. ``.jsonl``: {"source", "target"} objects."""
    if not os.path.isfile(path):
        raise DumpError(f"--texts: no such file: {path}")
    with open(path, "r", encoding="utf-8-sig") as f:  # a leading BOM is dropped
        lines = f.read().splitlines()
    if path.lower().endswith(".jsonl"):
        pairs: List[Pair] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DumpError(f"{path}:{number}: not valid JSON: {e}") from e
            if not isinstance(obj, dict) or not isinstance(obj.get("source"), str) \
                    or not isinstance(obj.get("target"), str):
                raise DumpError(f'{path}:{number}: expected an object with string fields "source" and "target"')
            pairs.append(Pair(obj["source"], obj["target"]))
        return pairs
    return [line for line in lines if line.strip()]


def special_affixes(tokenizer: Any) -> Tuple[List[int], List[int]]:
    """The special-token ids the tokenizer puts before and after a single text (usually just BOS)."""
    probe = "Hello world"
    with_special: List[int] = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    plain: List[int] = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    n = len(plain)
    for i in range(len(with_special) - n + 1):
        if with_special[i:i + n] == plain:
            return with_special[:i], with_special[i + n:]
    # The tokenizer changes the text's own ids when adding special tokens: fall back to BOS alone.
    bos = tokenizer.bos_token_id
    if bos is not None and with_special[:1] == [bos]:
        return [bos], []
    return [], []


def encode_text(tokenizer: Any, text: str, max_length: Optional[int]) -> Example:
    ids: List[int] = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if max_length is not None:
        ids = ids[:max_length]
    return Example(ids=ids)


def encode_pair(tokenizer: Any, pair: Pair, separator: str, prefix: List[int], suffix: List[int],
                max_length: Optional[int]) -> Example:
    """prefix + source + separator + target + suffix, each part tokenised on its own."""
    source: List[int] = list(tokenizer(pair.source, add_special_tokens=False)["input_ids"])
    sep: List[int] = list(tokenizer(separator, add_special_tokens=False)["input_ids"]) if separator else []
    target: List[int] = list(tokenizer(pair.target, add_special_tokens=False)["input_ids"])
    ids = prefix + source + sep + target + suffix
    s0 = len(prefix)
    t0 = s0 + len(source) + len(sep)
    spans = {"source": (s0, s0 + len(source)), "target": (t0, t0 + len(target))}
    if max_length is not None and len(ids) > max_length:
        ids = ids[:max_length]
        spans = {k: (min(a, max_length), min(b, max_length)) for k, (a, b) in spans.items()}
    return Example(ids=ids, spans=spans)


def encode_all(tokenizer: Any, items: Union[List[str], List[Pair]], separator: str,
               max_length: Optional[int], max_tokens: Optional[int]) -> List[Example]:
    """Tokenise in input order; with max_tokens keep whole sentences while the total stays within it."""
    examples: List[Example] = []
    total = 0
    prefix: List[int] = []
    suffix: List[int] = []
    if items and isinstance(items[0], Pair):
        prefix, suffix = special_affixes(tokenizer)
    for index, item in enumerate(items):
        if isinstance(item, Pair):
            ex = encode_pair(tokenizer, item, separator, prefix, suffix, max_length)
        else:
            ex = encode_text(tokenizer, item, max_length)
        if not ex.ids:
            raise DumpError(f"sentence {index} tokenises to no tokens")
        if max_tokens is not None and total + len(ex.ids) > max_tokens:
            if not examples:  # the first sentence alone is over the budget: keep its first max_tokens
                ex = Example(ids=ex.ids[:max_tokens],
                             spans={k: (min(a, max_tokens), min(b, max_tokens)) for k, (a, b) in ex.spans.items()})
                examples.append(ex)
            break
        examples.append(ex)
        total += len(ex.ids)
    return examples


# ----------------------------------------------------------------------------- model


def find_act_modules(model: Any) -> List[Any]:
    """model.model.layers[L].mlp.act_fn for every layer, or a DumpError naming the missing path."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None) if inner is not None else None
    if layers is None:
        raise DumpError(f"--mlp needs {ACT_FN_PATH} (Llama/Mistral/Qwen2-style models); "
                        f"{type(model).__name__} has no model.model.layers")
    modules: List[Any] = []
    for i, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        act = getattr(mlp, "act_fn", None) if mlp is not None else None
        if act is None or not hasattr(act, "register_forward_hook"):
            raise DumpError(f"--mlp needs {ACT_FN_PATH} as a module; "
                            f"model.model.layers[{i}].mlp.act_fn is missing in {type(model).__name__}")
        modules.append(act)
    if len({id(m) for m in modules}) != len(modules):
        raise DumpError(f"--mlp: {ACT_FN_PATH} is one module shared by several layers; cannot tell layers apart")
    return modules


def _version_tuple(version: str) -> Tuple[int, int]:
    parts = version.split(".")
    nums: List[int] = []
    for p in parts[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    while len(nums) < 2:
        nums.append(0)
    return nums[0], nums[1]


def load_model(name: str, device: str) -> Tuple[Any, Any]:
    import torch  # noqa: F401
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    # Load in the checkpoint's own dtype ("auto"); the keyword is dtype from transformers 4.56 on.
    if _version_tuple(transformers.__version__) >= (4, 56):
        model = AutoModelForCausalLM.from_pretrained(name, dtype="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(name, torch_dtype="auto")
    model.to(device)
    model.eval()
    return model, tokenizer


def _torch_dtype(name: Optional[str]) -> Any:
    import torch

    if name is None:
        return None
    return {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[name]


def extract(model: Any, examples: Sequence[Example], batch_size: int, device: str, pooling: str,
            mlp: bool, out_dtype: Any, pad_id: int) -> Dict[str, Any]:
    """Run the model over the examples; returns hidden.{L} (and mlp_act.{L}) tensors on the CPU."""
    import torch

    num_layers = int(model.config.num_hidden_layers)
    base = model.base_model  # the decoder without the LM head: same hidden states, no logits
    hidden_parts: List[List[Any]] = [[] for _ in range(num_layers)]
    mlp_parts: List[List[Any]] = [[] for _ in range(num_layers)]
    captured: Dict[int, Any] = {}
    handles: List[Any] = []

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            if layer in captured:
                raise RuntimeError(f"model.model.layers[{layer}].mlp.act_fn ran twice in one forward pass")
            captured[layer] = output.detach()
        return hook

    if mlp:
        for i, module in enumerate(find_act_modules(model)):
            handles.append(module.register_forward_hook(make_hook(i)))
    try:
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                batch = examples[start:start + batch_size]
                width = max(len(ex.ids) for ex in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ex in enumerate(batch):  # right padding: real tokens keep positions 0..n-1
                    input_ids[row, :len(ex.ids)] = torch.tensor(ex.ids, dtype=torch.long)
                    attention[row, :len(ex.ids)] = 1
                input_ids = input_ids.to(device)
                attention = attention.to(device)
                keep = attention.bool()
                captured.clear()
                out = base(input_ids=input_ids, attention_mask=attention, output_hidden_states=True,
                           use_cache=False, return_dict=True)
                states = out.hidden_states
                if states is None or len(states) != num_layers + 1:
                    got = "none" if states is None else str(len(states))
                    raise DumpError(f"expected {num_layers + 1} hidden states from the model, got {got}")
                for layer in range(num_layers):
                    h = states[layer + 1]  # hidden_states[0] is the embedding output
                    dtype = out_dtype if out_dtype is not None else h.dtype
                    if pooling == "token":
                        rows = h[keep]
                    else:
                        weights = attention.unsqueeze(-1).to(torch.float32)
                        rows = (h.to(torch.float32) * weights).sum(dim=1) / weights.sum(dim=1)
                    hidden_parts[layer].append(rows.to(dtype).cpu())
                if mlp:
                    if len(captured) != num_layers:
                        raise DumpError(f"--mlp: captured {len(captured)} of {num_layers} layers from {ACT_FN_PATH}")
                    for layer in range(num_layers):
                        a = captured[layer]
                        dtype = out_dtype if out_dtype is not None else a.dtype
                        mlp_parts[layer].append(a[keep].to(dtype).cpu())
                    captured.clear()
    finally:
        for handle in handles:
            handle.remove()

    tensors: Dict[str, Any] = {}
    for layer in range(num_layers):
        tensors[f"hidden.{layer}"] = torch.cat(hidden_parts[layer], dim=0).contiguous()
        hidden_parts[layer] = []
        if mlp:
            tensors[f"mlp_act.{layer}"] = torch.cat(mlp_parts[layer], dim=0).contiguous()
            mlp_parts[layer] = []
    return tensors


def token_tensors(examples: Sequence[Example]) -> Dict[str, Any]:
    """sentence_ids and mask.{name} for token-level files."""
    import torch

    sentence_ids = torch.cat([torch.full((len(ex.ids),), i, dtype=torch.int64) for i, ex in enumerate(examples)])
    tensors: Dict[str, Any] = {"sentence_ids": sentence_ids}
    names = sorted({name for ex in examples for name in ex.spans})
    for name in names:
        parts = []
        for ex in examples:
            m = torch.zeros((len(ex.ids),), dtype=torch.uint8)
            if name in ex.spans:
                a, b = ex.spans[name]
                m[a:b] = 1
            parts.append(m)
        tensors[f"mask.{name}"] = torch.cat(parts)
    return tensors


def write_atomic(tensors: Dict[str, Any], path: str, metadata: Dict[str, str]) -> int:
    """Write to a temporary file beside ``path`` and rename it into place; returns the size in bytes."""
    from safetensors.torch import save_file

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return os.path.getsize(path)


# ----------------------------------------------------------------------------- CLI


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dump_activations.py",
        description="Dump per-layer hidden states (and MLP gate activations) of a causal LM to a "
                    "safetensors file in Smelter's activations/1 layout (docs/ACTIVATIONS.md).")
    p.add_argument("--model", required=True, help="model directory or hub id (AutoModelForCausalLM)")
    p.add_argument("--texts", required=True,
                   help='UTF-8 text file, one sentence per line (blank lines skipped), or a .jsonl of '
                        '{"source": ..., "target": ...} objects')
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="sentences per forward pass (default 8)")
    p.add_argument("--max-length", type=_positive_int, default=None,
                   help="truncate each sentence to this many tokens (special tokens included)")
    p.add_argument("--max-tokens", type=_positive_int, default=None,
                   help="stop before the first sentence that would take the total past this many tokens")
    p.add_argument("--pooling", choices=("token", "mean"), default="token",
                   help="token: one row per token (default); mean: one row per sentence")
    p.add_argument("--mlp", action="store_true",
                   help=f"also dump mlp_act.{{L}} = act_fn(gate_proj(x)) from {ACT_FN_PATH} (token level only)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="convert the stored activations to this dtype (default: as computed)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--language", default="", help="free text stored in the metadata (e.g. en)")
    p.add_argument("--separator", default="\n",
                   help="text placed between source and target for .jsonl input (default: a newline)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.mlp and args.pooling != "token":
        parser.error("--mlp needs --pooling token")
    missing = [m for m in ("torch", "transformers", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"dump_activations: error: needs {', '.join(missing)} (pip install torch transformers safetensors)",
              file=sys.stderr)
        return 2
    try:
        return run(args)
    except DumpError as e:
        print(f"dump_activations: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import torch

    items = read_texts(args.texts)
    if not items:
        raise DumpError(f"--texts: no sentences in {args.texts}")
    device: str = args.device if args.device else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(args.model, device)
    if args.mlp:
        find_act_modules(model)  # fail before running anything
    examples = encode_all(tokenizer, items, args.separator, args.max_length, args.max_tokens)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    tensors = extract(model, examples, args.batch_size, device, args.pooling, args.mlp,
                      _torch_dtype(args.dtype), int(pad_id))
    if args.pooling == "token":
        tensors.update(token_tensors(examples))

    num_layers = int(model.config.num_hidden_layers)
    metadata: Dict[str, str] = {
        "smelter.format": FORMAT,
        "model": str(args.model),
        "pooling": args.pooling,
        "layers": str(num_layers),
        "hidden_size": str(tensors["hidden.0"].shape[1]),
        "language": args.language or "",
        "texts": os.path.basename(args.texts),
    }
    if args.mlp:
        metadata["intermediate_size"] = str(tensors["mlp_act.0"].shape[1])

    size = write_atomic(tensors, args.out, metadata)
    num_tokens = sum(len(ex.ids) for ex in examples)
    print(f"{args.out}: {num_tokens} tokens, {len(examples)} sentences, {num_layers} layers, "
          f"{size} bytes written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
