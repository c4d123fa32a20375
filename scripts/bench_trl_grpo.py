#!/usr/bin/env python3
"""TRL GRPOTrainer on the CPU, on the task and model of `sluice demo` / `sluice bench train`.

The baseline `sluice bench train --trl` compares against (it runs this script and reads the
last line of its stdout).

Task: digit sorting (prompt "31415=", answer "11345", exact-match reward 1/0 on the decoded
completion, special tokens skipped: the same rule as Sluice's ExactMatchReward, Extractor
Whole). Model: a Qwen3.5 text model (transformers `Qwen3_5ForCausalLM`, model_type
`qwen3_5_text`) with the demo model's config (4 layers: Gated DeltaNet, gated attention,
Gated DeltaNet, gated attention; vocab 14), randomly initialised, or the folder `--model`
names (e.g. one `sluice bench train --trl` saved after its SFT steps, so both start from the
same weights). Tokenizer: the demo's character vocabulary (`sluice::demo::vocab`), rebuilt
here as the same tokenizer.json unless the model folder has one.

GRPO settings match Sluice's `grpo` preset: loss_type "grpo", beta 0.04, epsilon 0.2,
num_iterations 1, scale_rewards "group", temperature 1, top_p 1, top_k 0, group size G =
num_generations, per-device batch = prompts x G (one optimizer step per generation batch),
AdamW without weight decay, grad clip 1.0, constant LR after 3 warm-up steps, fp32 (bf16 off).

Without flash-linear-attention (not installed on a CPU), transformers runs the Gated DeltaNet
layers with its torch fallback (chunked for the forward over prompts/training, recurrent for
one-token decode steps) — what TRL on a CPU uses.

Timing: wall clock of each trainer step (on_step_begin → on_step_end: generation, rewards,
reference and policy log-probs, loss, backward, optimizer step), median over `--steps` steps
after `--warmup` (torch's OpenMP threads wait passively unless OMP_WAIT_POLICY says
otherwise: other processes share the CPU here); generation alone (transformers `generate`
inside TRL) is timed by wrapping the trainer's single-turn generation. The last stdout line
is one JSON object.
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings

VOCAB = ["<pad>", "<eos>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "="]


def tokenizer_json() -> str:
    """The same tokenizer.json as `sluice::demo::vocab::tokenizer_json()`."""
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, t in [(0, "<pad>"), (1, "<eos>")]
    ]
    return json.dumps({
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated",
                          "invert": False},
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(VOCAB)},
                  "unk_token": "<pad>"},
    })


def model_config(hidden: int) -> dict:
    """The same fields as `sluice::demo::vocab::model_config_json(hidden)`."""
    return dict(
        vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=3 * hidden,
        num_hidden_layers=4,
        layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
        linear_conv_kernel_dim=4, linear_key_head_dim=hidden // 4,
        linear_value_head_dim=hidden // 4, linear_num_key_heads=2, linear_num_value_heads=4,
        rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.02,
        eos_token_id=1, pad_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "partial_rotary_factor": 0.5},
        hidden_act="silu", attn_output_gate=True, attention_bias=False,
    )


def sort_problems(n: int, length: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(length))
        rows.append({"prompt": digits + "=", "answer": "".join(sorted(digits))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--max-new-tokens", type=int, default=8, help="max_completion_length")
    ap.add_argument("--sort-len", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="timed GRPO steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed GRPO steps first")
    ap.add_argument("--lr", type=float, default=2e-3, help="as `sluice demo`'s rl_lr")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY for torch's OpenMP threads unless the environment sets "
                    "it (PASSIVE: idle threads sleep instead of spinning; on a shared, busy CPU "
                    "spinning made steps 10-50x slower)")
    ap.add_argument("--model", help="a Hugging Face model folder to start from "
                    "(default: random init with the demo config)")
    args = ap.parse_args()
    if min(args.group, args.prompts, args.max_new_tokens, args.steps) < 1 or args.group < 2:
        ap.error("group >= 2 and prompts, max-new-tokens, steps >= 1")

    warnings.filterwarnings("ignore")
    os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    torch.set_num_threads(args.threads)
    import transformers
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer
    from transformers import (PreTrainedTokenizerFast, Qwen3_5ForCausalLM, Qwen3_5TextConfig,
                              TrainerCallback)
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="bench-trl-grpo-")
    if args.model:
        model_dir = args.model
        source = f"loaded from {args.model}"
    else:
        model_dir = os.path.join(tmp.name, "model")
        model = Qwen3_5ForCausalLM(Qwen3_5TextConfig(**model_config(args.hidden)))
        model.save_pretrained(model_dir)
        source = f"random init (seed {args.seed})"
    tok_file = os.path.join(model_dir, "tokenizer.json")
    tok_obj = (Tokenizer.from_file(tok_file) if os.path.isfile(tok_file)
               else Tokenizer.from_str(tokenizer_json()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok_obj, eos_token="<eos>",
                                        pad_token="<pad>", padding_side="left")
    # The reference model (beta > 0) is re-loaded from the policy's path, so both load here.
    n_params = sum(p.numel() for p in Qwen3_5ForCausalLM.from_pretrained(model_dir).parameters())

    total_steps = args.warmup + args.steps
    data = Dataset.from_list(sort_problems(total_steps * args.prompts, args.sort_len, args.seed))

    def exact_match(completions, answer, **_):
        return [1.0 if c == a else 0.0 for c, a in zip(completions, answer)]

    cfg = GRPOConfig(
        output_dir=os.path.join(tmp.name, "out"),
        use_cpu=True, bf16=False, fp16=False, seed=args.seed,
        per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0,
        loss_type="grpo", beta=0.04, epsilon=0.2, num_iterations=1, scale_rewards="group",
        learning_rate=args.lr, lr_scheduler_type="constant_with_warmup", warmup_steps=3,
        weight_decay=0.0, max_grad_norm=1.0,
        max_steps=total_steps, logging_steps=1, save_strategy="no", report_to="none",
        dataloader_num_workers=0, disable_tqdm=True, log_completions=False,
    )

    step_times: list[float] = []
    gen_times: list[float] = []
    gen_tokens: list[int] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            step_times.append(time.perf_counter() - self.t0)

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, *a, **kw):
            t0 = time.perf_counter()
            out = super()._generate_single_turn(*a, **kw)
            gen_times.append(time.perf_counter() - t0)
            gen_tokens.append(sum(len(c) for c in out[0]))
            return out

    trainer = TimedGRPOTrainer(model=model_dir, reward_funcs=exact_match, args=cfg,
                               train_dataset=data, processing_class=tokenizer,
                               callbacks=[StepTimer()])
    t_train = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t_train

    logs = [h for h in trainer.state.log_history if "reward" in h]
    rewards = [h["reward"] for h in logs]
    lengths = [h.get("completions/mean_length", float("nan")) for h in logs]
    timed = step_times[args.warmup:]
    gen_timed = list(zip(gen_times, gen_tokens))[args.warmup:]
    gen_s = sum(t for t, _ in gen_timed)
    gen_tok = sum(n for _, n in gen_timed)
    last = rewards[-min(5, len(rewards)):] if rewards else []
    result = {
        "impl": "trl_grpo",
        "env": {"torch": torch.__version__, "transformers": transformers.__version__,
                "trl": trl.__version__, "threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "python": platform.python_version(),
                "linear_attention": "transformers torch fallback (no flash-linear-attention)",
                "loadavg": list(os.getloadavg())},
        "config": {"hidden": args.hidden, "group": args.group, "prompts": args.prompts,
                   "max_new_tokens": args.max_new_tokens, "steps": args.steps,
                   "warmup": args.warmup, "lr": args.lr, "loss_type": "grpo", "beta": 0.04,
                   "model": source, "parameters": n_params},
        "step_s": {"median": statistics.median(timed), "min": min(timed), "reps": len(timed),
                   "all": [round(t, 4) for t in step_times]},
        "generate_s": {"median": statistics.median([t for t, _ in gen_timed]),
                       "all": [round(t, 4) for t in gen_times]} if gen_timed else None,
        "rollout_tokens_per_s": gen_tok / gen_s if gen_s > 0 else None,
        "completion_length_mean": statistics.mean(lengths[args.warmup:] or lengths),
        "reward_first": rewards[0] if rewards else None,
        "reward_last": rewards[-1] if rewards else None,
        "reward_last5_mean": statistics.mean(last) if last else None,
        "reward_per_step": rewards,
        "train_s": train_s,
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
