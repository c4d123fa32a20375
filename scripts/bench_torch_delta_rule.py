#!/usr/bin/env python3
"""CPU baseline timings for the gated delta rule with PyTorch (Hugging Face reference code).

Times transformers' pure-torch Qwen3-Next functions on the CPU:

  * `torch_chunk_gated_delta_rule`: forward (under torch.no_grad) and forward + backward
    (autograd; loss = sum(out * random cotangent), gradients to q, k, v, g, beta),
    at B=1, H=4 (q/k/v heads), dk=dv=64, T in {256, 1024, 4096};
  * `torch_recurrent_gated_delta_rule`: one decode step (T=1 from an initial state).

Both with use_qk_l2norm_in_kernel=True, float32. Each figure is the median (and min) over
several runs after one warm-up run. One JSON object per measurement goes to stdout, e.g.

  {"impl": "torch_chunk", "T": 1024, "fwd_ms": ..., "fwd_bwd_ms": ...}
  {"impl": "torch_recurrent", "decode_step_ms": ...}

Usage (from the repository root):

  python scripts/bench_torch_delta_rule.py [--threads 2] [--json-out FILE]
"""

import sys

# Force the pure-torch references: with flash-linear-attention (or causal_conv1d)
# importable, transformers would swap in Triton kernels that do not run on CPU.
# Must happen before transformers is imported.
sys.modules["fla"] = None
sys.modules["causal_conv1d"] = None

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers.models.qwen3_next.modeling_qwen3_next import (  # noqa: E402
    torch_chunk_gated_delta_rule,
    torch_recurrent_gated_delta_rule,
)

B, H, DK, DV = 1, 4, 64, 64
SEQ_LENS = (256, 1024, 4096)


def make_inputs(T: int, gen: torch.Generator, requires_grad: bool = False):
    """Raw q, k, v and model-like gates g (log-decay <= 0) and beta, layout [B, T, H, d]."""
    q = torch.randn(B, T, H, DK, generator=gen)
    k = torch.randn(B, T, H, DK, generator=gen)
    v = torch.randn(B, T, H, DV, generator=gen)
    g = -F.softplus(torch.randn(B, T, H, generator=gen) - 1.5)
    beta = torch.sigmoid(torch.randn(B, T, H, generator=gen))
    xs = (q, k, v, g, beta)
    if requires_grad:
        for x in xs:
            x.requires_grad_(True)
    return xs


def time_ms(fn, reps: int, warmup: int = 1) -> tuple[float, float]:
    """(median, min) wall time of fn() in milliseconds over `reps` runs, after `warmup` untimed
    calls. The min is reported too because it is far less sensitive to other load on the machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def bench_chunk(T: int, reps: int, gen: torch.Generator) -> dict:
    q, k, v, g, beta = make_inputs(T, gen, requires_grad=True)
    cotangent = torch.randn(B, T, H, DV, generator=gen)
    kwargs = dict(chunk_size=64, output_final_state=True, use_qk_l2norm_in_kernel=True)

    def fwd():
        with torch.no_grad():
            torch_chunk_gated_delta_rule(q, k, v, g, beta, **kwargs)

    def fwd_bwd():
        for x in (q, k, v, g, beta):
            x.grad = None
        out, _ = torch_chunk_gated_delta_rule(q, k, v, g, beta, **kwargs)
        (out * cotangent).sum().backward()

    fwd_ms, fwd_min = time_ms(fwd, reps)
    fwd_bwd_ms, fwd_bwd_min = time_ms(fwd_bwd, reps)
    # Make sure the backward really reached every input.
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (q, k, v, g, beta))
    return {"impl": "torch_chunk", "T": T, "fwd_ms": round(fwd_ms, 3), "fwd_bwd_ms": round(fwd_bwd_ms, 3),
            "fwd_min_ms": round(fwd_min, 3), "fwd_bwd_min_ms": round(fwd_bwd_min, 3), "reps": reps}


def bench_decode(reps: int, gen: torch.Generator) -> dict:
    q, k, v, g, beta = make_inputs(1, gen)
    state = torch.randn(B, H, DK, DV, generator=gen) * 0.1

    def step():
        with torch.no_grad():
            torch_recurrent_gated_delta_rule(
                q, k, v, g, beta, initial_state=state,
                output_final_state=True, use_qk_l2norm_in_kernel=True,
            )

    med, best = time_ms(step, reps, warmup=5)
    return {"impl": "torch_recurrent", "T": 1, "decode_step_ms": round(med, 4), "decode_step_min_ms": round(best, 4),
            "reps": reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--reps", type=int, default=7, help="timed runs per figure (halved, min 3, at T=4096)")
    ap.add_argument("--json-out", metavar="FILE", help="also write all measurements to FILE as a JSON list")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "shape": {"B": B, "H": H, "dk": DK, "dv": DV},
        "dtype": "float32",
    }
    # First stdout line: the environment (no "impl" key, so it is easy to tell apart).
    print(json.dumps({"env": env}), flush=True)

    results = []
    for T in SEQ_LENS:
        reps = args.reps if T < 4096 else max(3, args.reps // 2)
        results.append(bench_chunk(T, reps, gen))
        print(json.dumps(results[-1]), flush=True)
    results.append(bench_decode(max(200, args.reps), gen))
    print(json.dumps(results[-1]), flush=True)

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
