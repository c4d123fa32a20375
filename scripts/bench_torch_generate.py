#!/usr/bin/env python3
"""transformers' generate (CPU by default, or --device cuda) for a local checkpoint: prefill and decode tokens/s.

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
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    model.to(args.device)
    model.eval()
    load_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(0)
    print(json.dumps({"env": {"torch": torch.__version__, "transformers": transformers.__version__,
                              "threads": args.threads, "device": args.device,
                              "dtype": args.dtype, "load_s": load_s}}))
    for b in [int(x) for x in args.batch.split(",")]:
        ids = torch.randint(0, vocab - 16, (b, args.prompt_len), generator=g).to(args.device)
        prefill, total = [], []
        with torch.no_grad():
            for rep in range(args.reps + 1):
                t0 = time.perf_counter()
                model(ids, use_cache=True)
                sync()
                t1 = time.perf_counter()
                model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False, use_cache=True, pad_token_id=0)
                sync()
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
