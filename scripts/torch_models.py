"""Exports the tiny TorchScript models cai's [torch] tests and examples load (Debian's python3 with python3-torch).

  /usr/bin/python3 scripts/torch_models.py OUT_DIR [--vocab V] [--seed S] [--d D] [--layers L] [--max-seq N]

writes, into OUT_DIR:
  lm.pt       a causal transformer LM: forward(ids (B, T) int64) -> logits (B, T, V); and
              forward_cached(ids (B, L), past: List[Tensor]) -> (logits (B, L, V), past'), the key-value cache
              protocol cai's LibTorch adapter uses for sampling (past = [k_0, v_0, k_1, v_1, ...], each (B, H, S, D);
              the first call passes an empty list).
  lm_nocache.pt  the same weights without forward_cached (cai then re-runs the whole prefix each step).
  reward.pt   a scalar head on the same kind of trunk: forward(ids) -> values (B, T).
  bad_rank.pt a module whose forward returns (B, V) — for the adapter's bad-input tests.
  dropout.pt  the LM with dropout 0.5 (the adapter's eval mode must switch it off).
  vowel_reward.pt  a byte-level reward model (vocab >= 256): values[b, t] = the fraction of the bytes a, e, i, o, u
              among ids[b, t-15..t] (the last 16 positions) — a scalar head whose weights are set by a rule, so
              examples/torch_ppo has a reward whose improvement can be read off.
"""
import argparse
import math
import os
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.hd = d // heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pk: Optional[torch.Tensor], pv: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, L, self.heads, self.hd).transpose(1, 2)
        k = k.view(B, L, self.heads, self.hd).transpose(1, 2)
        v = v.view(B, L, self.heads, self.hd).transpose(1, 2)
        start = 0
        if pk is not None and pv is not None:
            start = pk.size(2)
            k = torch.cat([pk, k], dim=2)
            v = torch.cat([pv, v], dim=2)
        S = k.size(2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hd)
        qi = torch.arange(L, device=x.device).unsqueeze(1) + start
        kj = torch.arange(S, device=x.device).unsqueeze(0)
        att = att.masked_fill(kj > qi, float("-inf"))
        y = self.drop(F.softmax(att, dim=-1)) @ v
        y = y.transpose(1, 2).contiguous().view(B, L, C)
        x = x + self.drop(self.proj(y))
        x = x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))
        return x, k, v


class Trunk(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, layers: int, max_seq: int, dropout: float):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_seq, d)
        self.blocks = nn.ModuleList([Block(d, heads, dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor, past: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        start = 0
        if len(past) > 0:
            start = past[0].size(2)
        pos = torch.arange(start, start + ids.size(1), device=ids.device)
        x = self.tok(ids) + self.pos(pos).unsqueeze(0)
        new_past: List[torch.Tensor] = []
        i = 0
        for blk in self.blocks:
            pk: Optional[torch.Tensor] = None
            pv: Optional[torch.Tensor] = None
            if len(past) > 0:
                pk = past[2 * i]
                pv = past[2 * i + 1]
            x, k, v = blk(x, pk, pv)
            new_past.append(k)
            new_past.append(v)
            i += 1
        return self.ln(x), new_past


class CausalLM(nn.Module):
    def __init__(self, vocab: int, d: int = 32, heads: int = 2, layers: int = 2, max_seq: int = 64, dropout: float = 0.0):
        super().__init__()
        self.trunk = Trunk(vocab, d, heads, layers, max_seq, dropout)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.trunk(ids, [])
        return self.head(h)


class CachedLM(CausalLM):
    @torch.jit.export
    def forward_cached(self, ids: torch.Tensor, past: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        h, new_past = self.trunk(ids, past)
        return self.head(h), new_past


class ScalarModel(nn.Module):
    def __init__(self, vocab: int, d: int = 32, heads: int = 2, layers: int = 1, max_seq: int = 64):
        super().__init__()
        self.trunk = Trunk(vocab, d, heads, layers, max_seq, 0.0)
        self.head = nn.Linear(d, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.trunk(ids, [])
        return self.head(h).squeeze(-1)


class BadRank(CausalLM):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.trunk(ids, [])
        return self.head(h)[:, -1, :]


class VowelReward(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.score = nn.Embedding(vocab, 1)
        with torch.no_grad():
            self.score.weight.zero_()
            for c in "aeiou":
                self.score.weight[ord(c), 0] = 1.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # values[b, t] = mean of the scores of ids[b, t - 15 .. t] (the last 16 positions, fewer at the start)
        s = self.score(ids).squeeze(-1)
        c = torch.cat([torch.zeros_like(s[:, :1]), s.cumsum(1)], dim=1)
        t = torch.arange(1, ids.size(1) + 1, device=ids.device)
        lo = torch.clamp(t - 16, min=0)
        return (c[:, 1:] - c[:, lo]) / (t - lo).to(s.dtype)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=48)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-seq", type=int, default=64)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)
    lm = CachedLM(a.vocab, a.d, 2, a.layers, a.max_seq)
    torch.jit.script(lm).save(os.path.join(a.out, "lm.pt"))
    plain = CausalLM(a.vocab, a.d, 2, a.layers, a.max_seq)
    plain.load_state_dict(lm.state_dict())
    torch.jit.script(plain).save(os.path.join(a.out, "lm_nocache.pt"))
    torch.manual_seed(a.seed + 1)
    torch.jit.script(ScalarModel(a.vocab, a.d, 2, 1, a.max_seq)).save(os.path.join(a.out, "reward.pt"))
    torch.jit.script(BadRank(a.vocab, a.d, 2, 1, a.max_seq)).save(os.path.join(a.out, "bad_rank.pt"))
    torch.manual_seed(a.seed)
    torch.jit.script(CausalLM(a.vocab, a.d, 2, a.layers, a.max_seq, dropout=0.5)).save(os.path.join(a.out, "dropout.pt"))
    if a.vocab >= 256:
        torch.jit.script(VowelReward(a.vocab)).save(os.path.join(a.out, "vowel_reward.pt"))


if __name__ == "__main__":
    main()
