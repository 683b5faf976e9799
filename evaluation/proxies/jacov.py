"""jacov: Jacobian covariance, from the first arXiv version of NASWOT.

Paper: Mellor et al., "Neural Architecture Search without Training", arXiv 2006.04647v1 (2020); as
used by Abdelfattah et al., ICLR 2021 (SamsungLabs/zero-cost-nas ``measures/jacob_cov.py``).
Published (Samsung, all 15,625 TSS networks) CIFAR-10 |Spearman| 0.731; no Kendall tau read.

Formula: J = d(sum_c y_c)/dx per sample (N x input size); C = corrcoef(J) (N x N, float64);
lambda = eigenvalues of C, k = 1e-5; score = ``-sum_i [ log(lambda_i + k) + 1 / (lambda_i + k) ]``.
No labels. Cost: 1 forward + 1 backward (to the input). Train mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import nan, register
from primitives.layers import spectrum
from primitives.passes import JACOV_K, jacobian_corr, jacov_score


@register("jacov", labels=False)
def jacov(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator) -> float:
    eig = spectrum(jacobian_corr(model, images))
    if float(eig.min()) + JACOV_K <= 0:
        return nan("jacov", f"the Jacobian correlation has eigenvalue {float(eig.min()):.3g} <= -1e-5")
    return jacov_score(eig)
