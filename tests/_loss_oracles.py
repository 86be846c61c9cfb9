"""Slow loop-based versions of the loss math, written straight from the definitions."""

from __future__ import annotations

import math

import torch
from torch import Tensor

EPS = 1e-12


def log(x: float) -> float:
    return math.log(max(x, EPS))


def kl(a: Tensor, b: Tensor) -> float:
    return sum(float(a[k]) * (log(float(a[k])) - log(float(b[k]))) for k in range(a.shape[0]))


def sigmax(z: Tensor) -> Tensor:
    s = [1.0 / (1.0 + math.exp(-float(v))) for v in z]
    total = sum(s)
    return torch.tensor([v / total for v in s], dtype=torch.float64)


def separation(p_i: Tensor, q: Tensor, y_i: int, direction: str, normalization: str) -> float:
    c_count = q.shape[0]
    z = c_count if normalization == "num_classes" else c_count - 1
    total = 0.0
    for c in range(c_count):
        if c == y_i:
            continue
        total += kl(q[c], p_i) if direction == "centroid_to_output" else kl(p_i, q[c])
    return total / z


def ncmi_loss(p: Tensor, q: Tensor, y: Tensor, direction: str, normalization: str, reduction: str):
    n = p.shape[0]
    cmis = [kl(p[i], q[int(y[i])]) for i in range(n)]
    seps = [separation(p[i], q, int(y[i]), direction, normalization) for i in range(n)]
    if reduction == "mean_of_ratios":
        loss = sum(c / (s + 1e-8) for c, s in zip(cmis, seps, strict=True)) / n
    else:
        loss = (sum(cmis) / n) / (sum(seps) / n + 1e-8)
    return loss, sum(cmis) / n, sum(seps) / n


def centroids(p: Tensor, y: Tensor, num_classes: int) -> Tensor:
    q = torch.zeros(num_classes, p.shape[1], dtype=torch.float64)
    for c in range(num_classes):
        rows = [p[i].double() for i in range(p.shape[0]) if int(y[i]) == c]
        if rows:
            q[c] = sum(rows) / len(rows)
        else:
            q[c] = 1.0 / p.shape[1]
    return q


def dataset_terms(p: Tensor, y: Tensor, direction: str, normalization: str):
    """Dataset CMI and Γ over the present classes, with empirical centroids."""
    classes = sorted({int(v) for v in y})
    q: dict[int, Tensor] = {}
    for c in classes:
        members = [p[i].double() for i in range(len(y)) if int(y[i]) == c]
        total = sum(members)
        assert isinstance(total, Tensor)  # c occurs in y: at least one member
        q[c] = total / len(members)
    z = len(classes) if normalization == "num_classes" else len(classes) - 1
    cmi = sum(kl(p[i], q[int(y[i])]) for i in range(len(y))) / len(y)
    gam = 0.0
    for i in range(len(y)):
        for c in classes:
            if c != int(y[i]):
                gam += kl(q[c], p[i]) if direction == "centroid_to_output" else kl(p[i], q[c])
    gam /= z * len(y)
    return cmi, gam
