"""An attending recurrent decoder, shared by every task whose model writes a sequence about an input it has read
first: caption's image (a grid of CNN features) and translate's source text (a bidirectional encoder's states).

Shapes: B inputs, N memory positions (grid cells, source tokens), C memory size, T output tokens, V vocabulary,
E embedding, H hidden, L layers, A attention size.

The decoder's initial state comes from the memory's mean (h0 = tanh(W m), and c0 likewise for an LSTM; the mean
over each input's own positions when the memory is padded). With attention, every step attends over the N
memory positions with the top layer's previous state (Bahdanau et al. 2015; Xu et al. 2015):

    additive  score_n = w . tanh(K m_n + Q h)          (the keys K m are computed once per input)
    dot       score_n = m_n . (Q h) / sqrt(C)           (Luong et al. 2015's "general" score)

gates the context with a learned scalar beta = sigmoid(f(h)) (how much the input matters for this token) and
feeds [embedding; beta * context] to the first layer ("input feeding"). Without input feeding (Luong et al.
2015's global attention), the stacked recurrent layers read the embeddings alone and attention comes after
them: the top layer's new state h_t attends, and the output reads tanh(W [h_t; context_t]). Every step's
attention then depends on the states only, so teacher forcing runs the recurrent layers over the whole target
in one fused kernel and attends for all steps at once, several times faster on a CPU than a step at a time.
Without attention the decoder is a stacked torch.nn RNN/LSTM/GRU started from the memory's mean, also fused.

The decoder's weights are attributes of the model itself (`embedding`, `init_state`, `key`, `query`, `score`,
`gate`, `cells` or `rnn`, `head`), the names caption checkpoints have always used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from charrnn.core.rnn import CELL_CLASSES, State, init_forget_gate_bias, make_rnn

ATTENTIONS = ("additive", "dot")


@dataclass
class Memory:
    """What the decoder reads of a batch of inputs."""

    states: torch.Tensor  # (B, N, C)
    keys: torch.Tensor | None  # (B, N, A) additive attention's projected states, computed once per input
    mask: torch.Tensor | None = None  # (B, N) True at each input's own positions; None: all of them

    def repeat(self, k: int) -> Memory:
        """Each input `k` times in a row (for beams and samples)."""
        rep = lambda t: None if t is None else t.repeat_interleave(k, dim=0)  # noqa: E731
        return Memory(rep(self.states), rep(self.keys), rep(self.mask))


class AttendingDecoder(nn.Module):
    """The decoder half of a model; a task's model subclasses it, builds its encoder, calls `build_decoder` and
    gives `encode(inputs) -> (Memory, State)` (usually `self.memory(states, mask)`)."""

    def build_decoder(self, *, cell: str, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int,
                      dropout: float, memory_size: int, attention: str | None, attention_dim: int,
                      input_feeding: bool = True) -> None:
        """The decoder's layers, for a memory of `memory_size` features; `attention` None, "additive" or "dot";
        with `input_feeding`, the context enters the first layer, else the output (see the module's docstring)."""
        C, H, L = memory_size, hidden_size, num_layers
        self.attention = attention
        self.input_feeding = input_feeding and attention is not None
        self.n_state = 2 if cell == "lstm" else 1
        self.n_layers, self.hidden = L, H
        self.init_state = nn.Linear(C, self.n_state * L * H)
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(H, vocab_size)
        if attention is None:
            self.rnn = make_rnn(cell, embedding_dim, H, L, dropout)
            return
        if attention == "additive":
            self.key = nn.Linear(C, attention_dim)
            self.query = nn.Linear(H, attention_dim)
            self.score = nn.Linear(attention_dim, 1)
        else:
            self.query = nn.Linear(H, C, bias=False)
        if not self.input_feeding:
            self.rnn = make_rnn(cell, embedding_dim, H, L, dropout)
            self.combine = nn.Linear(H + C, H)
            return
        self.gate = nn.Linear(H, 1)
        sizes = [embedding_dim + C] + [H] * (L - 1)
        self.cells = nn.ModuleList(CELL_CLASSES[cell](n, H) for n in sizes)
        init_forget_gate_bias(self.cells, cell, H)

    # ----- the memory and the initial state -------------------------------------------------------------

    def memory(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[Memory, State]:
        """The decoder's view of encoder states (B, N, C) (`mask` (B, N): each input's own positions), and its
        initial state from their mean."""
        if mask is None:
            mean = states.mean(1)
        else:
            m = mask[:, :, None].to(states.dtype)
            mean = (states * m).sum(1) / m.sum(1).clamp(min=1)
        keys = self.key(states) if self.attention == "additive" else None
        init = torch.tanh(self.init_state(mean))  # (B, n_state * L * H)
        state = init.view(-1, self.n_state, self.n_layers, self.hidden).permute(1, 2, 0, 3)  # (n_state, L, B, H)
        return Memory(states, keys, mask), tuple(s.contiguous() for s in state)

    # ----- decoding -------------------------------------------------------------------------------------

    def teacher_forced(self, memory: Memory, state: State, tokens: torch.Tensor,
                       sample_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for input tokens (B, T), and the attention weights (B, T, N).

        With `sample_prob` > 0 (scheduled sampling, Bengio et al. 2015), each step's input is, with that
        probability, the model's own most likely previous token instead of the true one."""
        if not self.input_feeding and sample_prob == 0:
            out, _ = self.rnn(self.embedding(tokens), state if self.n_state == 2 else state[0])  # one fused kernel
            if self.attention is None:
                return self.head(self.drop(out)), None
            logits, alphas = self._attend_after(out, memory)  # (B, T, V), (B, T, N): every step at once
            return logits, alphas
        logits, alphas = [], []
        token = tokens[:, 0]
        for t in range(tokens.size(1)):
            step_logits, state, alpha = self.step(token, state, memory)
            logits.append(step_logits)
            alphas.append(alpha)
            if t + 1 < tokens.size(1):
                token = tokens[:, t + 1]
                if sample_prob > 0:
                    own = torch.rand(token.shape, device=token.device) < sample_prob
                    token = torch.where(own, step_logits.argmax(1), token)
        return torch.stack(logits, 1), (torch.stack(alphas, 1) if alphas[0] is not None else None)

    def step(self, token: torch.Tensor, state: State,
             memory: Memory) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """One decoding step: logits (B, V) for the next token after `token` (B,), the new state, and the
        attention weights (B, N) it used (None without attention)."""
        x = self.embedding(token)  # (B, E)
        if not self.input_feeding:
            out, new = self.rnn(x[:, None], state if self.n_state == 2 else state[0])
            new = tuple(new) if isinstance(new, tuple) else (new,)
            if self.attention is None:
                return self.head(self.drop(out[:, 0])), new, None
            logits, alpha = self._attend_after(out, memory)
            return logits[:, 0], new, alpha[:, 0]
        context, alpha = self.attend(state[0][-1], memory)
        x = torch.cat([x, context], dim=1)  # (B, E + C)
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            if self.n_state == 2:
                h, c = cell(x, (state[0][layer], state[1][layer]))
                cs.append(c)
            else:
                h = cell(x, state[0][layer])
            hs.append(h)
            x = self.drop(h)
        new = (torch.stack(hs), torch.stack(cs)) if cs else (torch.stack(hs),)
        return self.head(x), new, alpha

    def _attend_after(self, out: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Without input feeding: logits (B, T, V) and weights (B, T, N) of the top layer's states out (B, T, H),
        each attending over the memory."""
        if self.attention == "additive":
            scores = self.score(torch.tanh(memory.keys[:, None] + self.query(out)[:, :, None])).squeeze(3)  # (B,T,N)
        else:
            q = self.query(out)  # (B, T, C)
            scores = torch.bmm(q, memory.states.transpose(1, 2)) / math.sqrt(q.size(2))  # (B, T, N)
        if memory.mask is not None:
            scores = scores.masked_fill(~memory.mask[:, None], float("-inf"))
        alpha = scores.softmax(dim=2)
        context = torch.bmm(alpha.to(memory.states.dtype), memory.states)  # (B, T, C)
        combined = torch.tanh(self.combine(torch.cat([out, context.to(out.dtype)], dim=2)))  # (B, T, H)
        return self.head(self.drop(combined)), alpha

    def attend(self, h: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated context (B, C) and weights (B, N) for the top layer's previous state h (B, H)."""
        if self.attention == "additive":
            scores = self.score(torch.tanh(memory.keys + self.query(h)[:, None])).squeeze(2)  # (B, N)
        else:
            q = self.query(h)  # (B, C)
            scores = torch.bmm(memory.states, q[:, :, None]).squeeze(2) / math.sqrt(q.size(1))  # (B, N)
        if memory.mask is not None:
            scores = scores.masked_fill(~memory.mask, float("-inf"))
        alpha = scores.softmax(dim=1)
        context = (alpha[:, :, None] * memory.states).sum(1)  # (B, C)
        beta = torch.sigmoid(self.gate(h))  # (B, 1): how much the input matters for this token
        return beta * context, alpha
