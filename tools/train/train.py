#!/usr/bin/env python3
"""Trains krasis's embedded demo model: a byte-level BPE tokenizer and a small DeepSeek-V2-architecture
mixture-of-experts model (MLA attention with YaRN, a dense first layer, shared + routed experts, top-k
softmax routing: the config keys of DeepSeek-V2-Lite, scaled down) on the public-domain text in
../shared/data/text. The last 5% of each file is held out for evaluation.

Writes a Hugging Face model directory (save_pretrained + tokenizer.json + tokenizer_config.json with a
chat template) to OUT_DIR and train_report.json with the losses.

    python3 tools/train/train.py OUT_DIR [--steps N] [--device cuda|cpu]

Run on the device machine (one H200, a few minutes); tools/train/reference.py then records the reference
perplexity and generations with the pinned transformers on CPU.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from corpus import load_corpus  # noqa: E402

VOCAB = 4096
SEQ = 256
SPECIALS = ["<|bos|>", "<|eos|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B",
                                                       special_tokens=[("<|bos|>", bos)])
    return tok


def model_config(tok):
    return DeepseekV2Config(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
        num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8, n_shared_experts=2, n_routed_experts=16,
        num_experts_per_tok=4, first_k_dense_replace=1, moe_layer_freq=1, topk_method="greedy", n_group=1,
        topk_group=1, norm_topk_prob=False, routed_scaling_factor=1.0, scoring_func="softmax",
        q_lora_rank=None, kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
        rope_theta=10000.0,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256, "beta_fast": 32,
                      "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
        bos_token_id=tok.token_to_id("<|bos|>"), eos_token_id=tok.token_to_id("<|eos|>"),
        initializer_range=0.02)


def batches(ids, batch, gen, device):
    n = ids.numel() - SEQ - 1
    while True:
        starts = torch.randint(0, n, (batch,), generator=gen)
        x = torch.stack([ids[s:s + SEQ + 1] for s in starts.tolist()]).to(device)
        yield x[:, :-1], x[:, 1:]


def balance_loss(router_logits, top_k):
    """Switch-style load balancing over the router's softmax (keeps all experts in use)."""
    probs = router_logits.float().softmax(-1)
    chosen = torch.zeros_like(probs).scatter_(1, probs.topk(top_k, dim=-1).indices, 1.0)
    return probs.shape[-1] * (chosen.mean(0) / top_k * probs.mean(0)).sum()


@torch.no_grad()
def eval_loss(model, ids, device, max_windows=64):
    model.eval()
    losses = []
    for b in range(0, min(ids.numel() - 1, max_windows * SEQ), SEQ):
        x = ids[b:b + SEQ + 1].to(device)
        if x.numel() < 2:
            break
        out = model(x[None, :-1], labels=x[None, 1:].clone())
        logits = out.logits[0].float()
        losses.append(torch.nn.functional.cross_entropy(logits, x[1:], reduction="sum").item() / (x.numel() - 1))
    model.train()
    return sum(losses) / len(losses)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--time-limit", type=float, default=0, help="stop early after this many seconds")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                                                    "text"))
    args = ap.parse_args()
    torch.manual_seed(0)
    train_texts, eval_texts = load_corpus(args.data)
    tok = train_tokenizer(train_texts)
    bos = tok.token_to_id("<|bos|>")
    train_ids = torch.tensor(sum(([bos] + tok.encode(t, add_special_tokens=False).ids for t in train_texts), []))
    eval_ids = torch.tensor(sum(([bos] + tok.encode(t, add_special_tokens=False).ids for t in eval_texts), []))
    print(f"tokens: train {train_ids.numel()}, held-out {eval_ids.numel()}", flush=True)

    cfg = model_config(tok)
    model = DeepseekV2ForCausalLM(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters {n_params / 1e6:.2f} M; transformers {transformers.__version__}, torch {torch.__version__}",
          flush=True)

    router_logits = []
    for layer in model.model.layers:
        if hasattr(layer.mlp, "gate"):
            layer.mlp.gate.register_forward_hook(lambda m, i, o: router_logits.append(o[0]))

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    gen = torch.Generator().manual_seed(1)
    data = batches(train_ids, args.batch, gen, args.device)
    history, best = [], None
    t0 = time.time()
    model.train()
    for step in range(1, args.steps + 1):
        x, y = next(data)
        router_logits.clear()
        with torch.autocast(device_type="cuda" if args.device == "cuda" else "cpu", dtype=torch.bfloat16):
            logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, VOCAB), y.reshape(-1))
        aux = sum(balance_loss(r, cfg.num_experts_per_tok) for r in router_logits) / max(1, len(router_logits))
        opt.zero_grad(set_to_none=True)
        (loss + 0.01 * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps:
            rec = {"step": step, "loss": round(loss.item(), 4), "aux": round(aux.item(), 4),
                   "seconds": round(time.time() - t0, 1),
                   "heldout_loss": round(eval_loss(model, eval_ids, args.device), 4)}
            history.append(rec)
            print(json.dumps(rec), flush=True)
            if best is None or rec["heldout_loss"] < best[0]:  # early stopping: the corpus is small
                best = (rec["heldout_loss"], step, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if args.time_limit and time.time() - t0 > args.time_limit:
                print(f"time limit reached at step {step}", flush=True)
                break

    model.load_state_dict(best[2])
    print(f"keeping step {best[1]} (held-out loss {best[0]})", flush=True)
    os.makedirs(args.out, exist_ok=True)
    model = model.to(torch.bfloat16).cpu()
    model.save_pretrained(args.out, max_shard_size="14MB")
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|eos|>",
                   "add_bos_token": True, "add_eos_token": False, "model_max_length": 1024,
                   "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE}, f, indent=2)
    report = {"parameters": n_params, "steps": args.steps, "batch": args.batch, "seq": SEQ, "lr": args.lr,
              "train_tokens": train_ids.numel(), "heldout_tokens": eval_ids.numel(),
              "tokens_seen": args.steps * args.batch * SEQ, "history": history,
              "kept_step": best[1], "kept_heldout_loss": best[0],
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
              "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    with open(os.path.join(args.out, "train_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("saved", args.out, os.listdir(args.out))


if __name__ == "__main__":
    main()
