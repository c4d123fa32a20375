#!/usr/bin/env python3
"""transformers' generate on CPU for a local checkpoint: prefill and decode tokens/s.

The PyTorch side of `sluice bench generate` (same tiny checkpoint, same prompt length and
number of new tokens). Prints one JSON object per batch size.

    python scripts/bench_torch_generate.py --model tests/fixtures/models/qwen3_next_tiny
"""
import argparse
import json
import statistics
import sys
import time

# transformers swaps in flash-linear-attention / causal-conv1d kernels when importable; they
# need a GPU. Force the pure-torch paths.
sys.modules["fla"] = None
sys.modules["causal_conv1d"] = None

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="1,8")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(0)
    print(json.dumps({"env": {"torch": torch.__version__, "transformers": transformers.__version__,
                              "threads": args.threads}}))
    for b in [int(x) for x in args.batch.split(",")]:
        ids = torch.randint(0, vocab - 16, (b, args.prompt_len), generator=g)
        prefill, total = [], []
        with torch.no_grad():
            for rep in range(args.reps + 1):
                t0 = time.perf_counter()
                model(ids, use_cache=True)
                t1 = time.perf_counter()
                model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False, use_cache=True, pad_token_id=0)
                t2 = time.perf_counter()
                if rep > 0:  # the first run warms up
                    prefill.append(t1 - t0)
                    total.append(t2 - t1)
        p = statistics.median(prefill)
        decode = max(statistics.median(total) - p, 1e-9)
        print(json.dumps({
            "impl": "transformers_generate", "batch": b, "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "prefill_tok_s": b * args.prompt_len / p,
            "decode_tok_s": b * args.new_tokens / decode,
        }))


if __name__ == "__main__":
    main()
