"""A two-layer ReLU MLP in numpy with exact per-sample gradients (the continual benchmark's model).

All parameters live in one contiguous float32 vector ``theta`` (``W1 | b1 | W2 | b2``, row-major),
so
the EWC++ API can take ``θ`` and the gradient as they are. Per-sample gradients are what the Fisher
needs (design §4: never the square of a batch-mean gradient); for a two-layer net they are outer
products
of the back-propagated errors with the layer inputs, built here with one einsum per layer.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class MLP:
    """``x ↦ W2 relu(W1 x + b1) + b2`` with softmax cross-entropy."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, rng: np.random.Generator) -> None:
        self.shapes = [(n_hidden, n_in), (n_hidden,), (n_out, n_hidden), (n_out,)]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.param_count = sum(self.sizes)
        self.theta = np.zeros(self.param_count, dtype=np.float32)
        w1, _, w2, _ = self.views(self.theta)
        # He initialisation for the ReLU layer, Glorot-like for the output layer.
        w1[...] = rng.normal(0.0, np.sqrt(2.0 / n_in), size=w1.shape)
        w2[...] = rng.normal(0.0, np.sqrt(1.0 / n_hidden), size=w2.shape)

    def views(self, flat: F32) -> list[F32]:
        """The four parameter blocks as views into ``flat`` (a θ-shaped vector or a gradient)."""
        out, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return out

    def _forward(self, x: F32) -> tuple[F32, F32, F32]:
        w1, b1, w2, b2 = self.views(self.theta)
        z1 = x @ w1.T + b1
        h = np.maximum(z1, 0.0)
        logits = h @ w2.T + b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return z1, h, p

    def predict(self, x: F32) -> I64:
        pred: I64 = np.argmax(self._forward(x)[2], axis=1)
        return pred

    def accuracy(self, x: F32, y: I64) -> float:
        return float(np.mean(self.predict(x) == y))

    def grad(self, x: F32, y: I64) -> tuple[float, F32]:
        """Mean cross-entropy over the batch and its gradient (a new θ-shaped vector)."""
        z1, h, p = self._forward(x)
        n = x.shape[0]
        loss = float(-np.mean(np.log(p[np.arange(n), y] + 1e-12)))
        d2 = p.copy()
        d2[np.arange(n), y] -= 1.0
        d2 /= n
        g = np.empty(self.param_count, dtype=np.float32)
        gw1, gb1, gw2, gb2 = self.views(g)
        _, _, w2, _ = self.views(self.theta)
        gw2[...] = d2.T @ h
        gb2[...] = d2.sum(axis=0)
        d1 = (d2 @ w2) * (z1 > 0)
        gw1[...] = d1.T @ x
        gb1[...] = d1.sum(axis=0)
        return loss, g

    def per_sample_grads(self, x: F32, rng: np.random.Generator, y: I64 | None = None) -> F32:
        """``n × P`` per-sample gradients of the log-loss.

        With ``y=None`` labels are drawn from the model's own predictive distribution, which makes
        ``E[g²]`` the true Fisher (with the observed labels it would be the "empirical" Fisher,
        which
        shrinks toward zero on examples the model already fits).
        """
        z1, h, p = self._forward(x)
        n = x.shape[0]
        if y is None:
            u = rng.random((n, 1))
            y = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
        d2 = p.copy()
        d2[np.arange(n), y] -= 1.0
        _, _, w2, _ = self.views(self.theta)
        d1 = (d2 @ w2) * (z1 > 0)
        out = np.empty((n, self.param_count), dtype=np.float32)
        s = np.cumsum([0, *self.sizes])
        out[:, s[0] : s[1]] = np.einsum("nh,nd->nhd", d1, x).reshape(n, -1)
        out[:, s[1] : s[2]] = d1
        out[:, s[2] : s[3]] = np.einsum("no,nh->noh", d2, h).reshape(n, -1)
        out[:, s[3] : s[4]] = d2
        return out

    def fisher_diag(self, x: F32, y: I64 | None = None, chunk: int = 512) -> F32:
        """Mean over ``x`` of the per-sample squared log-loss gradients, in closed form.

        With ``y=None`` this is the **true** Fisher: for every example the expectation over the
        model's own predictive distribution, ``Σ_c p_c g_c²`` — exact, not a sampled label. With
        observed labels ``y`` it is the empirical Fisher ``mean g_y²``. Both equal the average of
        the squared rows of :meth:`per_sample_grads` (tested), without materialising ``n × P``:
        per example and output unit, ``E[(p_o − [y=o])²] = p_o(1 − p_o)``, and for hidden unit
        ``k`` the back-propagated error's second moment is ``Σ_c p_c W2[c,k]² − (p·W2[:,k])²``;
        a weight's squared gradient is that times its squared input.
        """
        _, _, w2, _ = self.views(self.theta)
        fw1, fb1, fw2, fb2 = (np.zeros(shape, dtype=np.float64) for shape in self.shapes)
        n = x.shape[0]
        for start in range(0, n, chunk):
            xc = x[start : start + chunk]
            z1, h, p = self._forward(xc)
            mask = (z1 > 0).astype(np.float64)
            p64 = p.astype(np.float64)
            if y is None:
                e2 = p64 * (1.0 - p64)
                a = p64 @ w2
                v = np.maximum(p64 @ (w2.astype(np.float64) ** 2) - a * a, 0.0) * mask
            else:
                d2 = p64.copy()
                d2[np.arange(len(xc)), y[start : start + chunk]] -= 1.0
                e2 = d2 * d2
                v = ((d2 @ w2) * mask) ** 2
            fw2 += e2.T @ (h.astype(np.float64) ** 2)
            fb2 += e2.sum(axis=0)
            fw1 += v.T @ (xc.astype(np.float64) ** 2)
            fb1 += v.sum(axis=0)
        out: F32 = (np.concatenate([fw1.ravel(), fb1, fw2.ravel(), fb2]) / n).astype(np.float32)
        return out
