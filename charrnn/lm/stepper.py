"""Stepper: fast one-character-at-a-time inference with the weights of a trained CharRNN (sampling, beam
search, and the language model inside ctc's beam search).

Shapes: B streams, L layers, H hidden size, G = gates * H, V vocabulary size.
"""

from __future__ import annotations

import numpy as np
import torch

from charrnn.core.cells import layer_weights


class Stepper:
    """Fast one-character-at-a-time inference with the weights of a trained CharRNN.

    Sampling calls the network once per character, so per-call overhead, not arithmetic, limits a
    plain loop over `nn.LSTM`. This stepper removes what it can:
    - layer 0's input projection of every vocabulary id is computed once (a (V, G) table), so reading a
      character is a row lookup instead of an embedding and a matrix product;
    - all hidden states live in one (B, L*H) buffer, so [h of layer l-1 ; h of layer l] is a view and,
      for rnn and lstm, each layer above the first is a single product with [W_ih | W_hh];
    - LSTM gate rows are reordered to (i, f, o, g) so two in-place activations cover the four gates;
    - every buffer is allocated once and written in place; no autograd graph is recorded.
    It computes what `CharRNN.forward` computes, step by step (tested to 1e-5).
    """

    def __init__(self, model, batch_size: int, banned: list[int] | tuple[int, ...] = ()):
        """`banned` ids get logit -inf (their output bias is set to -inf), so they are never chosen."""
        cfg = model.config
        self.cell, self.L, self.H, self.B = cfg.cell, cfg.num_layers, cfg.hidden_size, batch_size
        H, L, B = self.H, self.L, batch_size
        device, dtype = model.head.weight.device, model.head.weight.dtype
        G = {"rnn": 1, "lstm": 4, "gru": 3}[self.cell] * H
        order = None
        if self.cell == "lstm":
            order = torch.cat([torch.arange(k * H, (k + 1) * H, device=device) for k in (0, 1, 3, 2)])
        self.w_in, self.w_hh, self.b_in, self.b_hh = [], [], [], []
        with torch.no_grad():
            for layer in range(L):
                w_ih, w_hh, b_ih, b_hh = (t.detach() for t in layer_weights(model.rnn, layer))
                if order is not None:
                    w_ih, w_hh, b_ih, b_hh = w_ih[order], w_hh[order], b_ih[order], b_hh[order]
                gru = self.cell == "gru"
                if layer == 0:
                    # (V, G): the input projection of every symbol, biases folded in (but GRU's b_hn,
                    # which the reset gate multiplies, stays with the hidden projection).
                    inputs = model.embed(torch.arange(cfg.vocab_size, device=device).unsqueeze(0))[0]
                    self.w_in.append((inputs @ w_ih.t() + b_ih + (0 if gru else b_hh)).contiguous())
                    self.w_hh.append(w_hh.contiguous())
                    self.b_in.append(None)
                    self.b_hh.append(b_hh.clone() if gru else None)
                elif gru:
                    self.w_in.append(w_ih.contiguous())
                    self.w_hh.append(w_hh.contiguous())
                    self.b_in.append(b_ih.clone())
                    self.b_hh.append(b_hh.clone())
                else:
                    self.w_in.append(torch.cat([w_ih, w_hh], 1).contiguous())  # (G, 2H)
                    self.w_hh.append(None)
                    self.b_in.append((b_ih + b_hh).contiguous())
                    self.b_hh.append(None)
            self.head_w = model.head.weight.detach().clone()  # (V, H)
            self.head_b = model.head.bias.detach().clone()
            self.head_b[list(banned)] = float("-inf")
        self.hs = torch.zeros(B, L * H, device=device, dtype=dtype)  # [h_0 | h_1 | ... | h_{L-1}]
        # One stream on the CPU: matrix-vector products through NumPy's BLAS (sgemv) on the same memory,
        # which measured 25-35% faster here than torch.addmm with a single row.
        self.use_numpy = device.type == "cpu" and B == 1 and dtype == torch.float32
        self.h = [self.hs[:, l * H:(l + 1) * H] for l in range(L)]
        self.c = [torch.zeros(B, H, device=device, dtype=dtype) for _ in range(L)] if self.cell == "lstm" else []
        self.gates = torch.zeros(B, G, device=device, dtype=dtype)
        self.gh = torch.zeros(B, G, device=device, dtype=dtype)
        self.tmp = torch.zeros(B, H, device=device, dtype=dtype)
        self.logits = torch.zeros(B, cfg.vocab_size, device=device, dtype=dtype)
        self._scratch: tuple[torch.Tensor, ...] | None = None  # step_rows' buffers, grown to powers of two
        if self.use_numpy:  # NumPy views of the same memory: weights are stored (G, I), as sgemv reads them
            view = lambda t: None if t is None else t.numpy()  # noqa: E731
            self.np_w_in, self.np_w_hh = [view(w) for w in self.w_in], [view(w) for w in self.w_hh]
            self.np_b_in, self.np_b_hh = [view(b) for b in self.b_in], [view(b) for b in self.b_hh]
            self.np_head_w, self.np_head_b = view(self.head_w), view(self.head_b)
            self.np_hs, self.np_gates, self.np_gh = self.hs[0].numpy(), self.gates[0].numpy(), self.gh[0].numpy()
            self.np_logits = self.logits[0].numpy()

    @torch.no_grad()
    def load_state(self, state) -> None:
        """Copy a model state (tuple of (L, B, H) tensors) into the buffers."""
        for l in range(self.L):
            self.h[l].copy_(state[0][l])
            if self.cell == "lstm":
                self.c[l].copy_(state[1][l])

    def state(self):
        """The current state in the model's layout (a copy)."""
        h = torch.stack([t.clone() for t in self.h])
        return (h, torch.stack([t.clone() for t in self.c])) if self.cell == "lstm" else (h,)

    @torch.no_grad()
    def reorder(self, index: torch.Tensor) -> None:
        """Keep streams `index` (beam search): stream k takes the state of stream index[k]."""
        self.hs.copy_(self.hs.index_select(0, index))
        for c in self.c:
            c.copy_(c.index_select(0, index))

    def _matvec(self, l: int, x: torch.Tensor | None) -> None:
        """gates (and gh for GRU) of layer l from the current buffers: the only matrix work of a step."""
        H = self.H
        if self.use_numpy:
            hs, gates, gh = self.np_hs, self.np_gates, self.np_gh
            h = hs[l * H:(l + 1) * H]
            if self.cell == "gru":
                if l == 0:
                    gates[:] = self.np_w_in[0][x.item()]
                else:
                    np.dot(self.np_w_in[l], hs[(l - 1) * H:l * H], out=gates)
                    gates += self.np_b_in[l]
                np.dot(self.np_w_hh[l], h, out=gh)
                gh += self.np_b_hh[l]
            elif l == 0:
                np.dot(self.np_w_hh[0], h, out=gates)
                gates += self.np_w_in[0][x.item()]
            else:
                np.dot(self.np_w_in[l], hs[(l - 1) * H:(l + 1) * H], out=gates)
                gates += self.np_b_in[l]
            return
        self._project(l, x, self.hs, self.h, self.gates, self.gh)

    def _project(self, l: int, x: torch.Tensor, hs: torch.Tensor, h: list[torch.Tensor], gates: torch.Tensor,
                 gh: torch.Tensor) -> None:
        """`_matvec` with torch, on the given buffers: hs (B, >= L*H) holds [h_0 | ... | h_{L-1}] and h its
        layers' views."""
        H = self.H
        if l == 0:
            torch.index_select(self.w_in[0], 0, x, out=gates)
        if self.cell == "gru":
            if l > 0:
                torch.addmm(self.b_in[l], h[l - 1], self.w_in[l].t(), out=gates)
            torch.addmm(self.b_hh[l], h[l], self.w_hh[l].t(), out=gh)
        elif l == 0:
            gates.addmm_(h[0], self.w_hh[0].t())
        else:
            torch.addmm(self.b_in[l], hs[:, (l - 1) * H:(l + 1) * H], self.w_in[l].t(), out=gates)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Advance every stream by one character `x` (B,); returns the next-character logits (B, V).

        Every tensor here is a detached copy, so no autograd graph is recorded even outside no_grad.
        """
        H = self.H
        for l in range(self.L):
            self._matvec(l, x)
            self._update(self.gates, self.gh, self.tmp, self.h[l], self.c[l] if self.c else None)
        if self.use_numpy:
            np.dot(self.np_head_w, self.np_hs[(self.L - 1) * H:], out=self.np_logits)
            self.np_logits += self.np_head_b
            return self.logits
        return torch.addmm(self.head_b, self.h[-1], self.head_w.t(), out=self.logits)

    def _update(self, gates: torch.Tensor, gh: torch.Tensor, tmp: torch.Tensor, h: torch.Tensor,
                c: torch.Tensor | None) -> None:
        """One layer's new h (and c), in place, from its projections gates (and gh for GRU)."""
        H = self.H
        if self.cell == "gru":
            rz = gates[:, :2 * H].add_(gh[:, :2 * H]).sigmoid_()
            n = gates[:, 2 * H:].addcmul_(rz[:, :H], gh[:, 2 * H:]).tanh_()
            torch.sub(h, n, out=tmp)
            torch.addcmul(n, rz[:, H:], tmp, out=h)  # h' = (1 - z) n + z h
        elif self.cell == "rnn":
            torch.tanh(gates, out=h)
        else:
            gates[:, :3 * H].sigmoid_()
            gates[:, 3 * H:].tanh_()
            c.mul_(gates[:, H:2 * H]).addcmul_(gates[:, :H], gates[:, 3 * H:])  # c' = f c + i g
            torch.tanh(c, out=tmp)
            torch.mul(gates[:, 2 * H:3 * H], tmp, out=h)  # h' = o tanh(c')

    @torch.no_grad()
    def step_rows(self, states: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`step` for n streams kept outside the stepper: states (n, S) are their states packed as
        [h_0 .. h_{L-1} | c_0 .. c_{L-1}] (S = L*H, or 2*L*H for an LSTM), advanced in place by one character
        each, x (n,); returns the logits (n, V), valid until the next call. The same arithmetic as `step`, on
        any number of streams (ctc's LM fusion keeps a table of states and steps a few hundred at a time).
        """
        n, H, L = x.size(0), self.H, self.L
        hs = states[:, :L * H]
        h = [hs[:, l * H:(l + 1) * H] for l in range(L)]
        c = [states[:, (L + l) * H:(L + l + 1) * H] for l in range(L)] if self.cell == "lstm" else [None] * L
        if self._scratch is None or self._scratch[0].size(0) < n:  # kept: fresh large buffers cost page faults
            size = 1 << (n - 1).bit_length()
            self._scratch = (self.gates.new_empty(size, self.gates.size(1)), self.gh.new_empty(size, self.gh.size(1)),
                             self.tmp.new_empty(size, H), self.logits.new_empty(size, self.logits.size(1)))
        gates, gh, tmp, logits = (t[:n] for t in self._scratch)
        for l in range(L):
            self._project(l, x, hs, h, gates, gh)
            self._update(gates, gh, tmp, h[l], c[l])
        return torch.addmm(self.head_b, h[-1], self.head_w.t(), out=logits)
