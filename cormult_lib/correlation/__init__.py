"""Correlation: CorMulT sections 3.2.2-3.2.4.

* :mod:`~cormult_lib.correlation.negatives` — negative samples without labels (strategies A-D);
* :mod:`~cormult_lib.correlation.evaluator` — the Modality Correlation Evaluator (MCE) and
  :func:`~cormult_lib.correlation.evaluator.build_evaluator`;
* :mod:`~cormult_lib.correlation.distances` — distances in the shared space and the bounded
  correlation coefficients made from them;
* :mod:`~cormult_lib.correlation.losses` — the triplet loss of Eq. 8;
* :mod:`~cormult_lib.correlation.evaluation` — how well coefficients separate real samples from
  negatives, and strong from weakly correlated ones.
"""
