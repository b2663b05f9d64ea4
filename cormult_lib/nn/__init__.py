"""Building blocks shared by the correlation evaluator and the sentiment models.

Modules:
    functional: dropout masks and attention for small models on the CPU (PyTorch's fused
        kernels on CUDA).
    positions: valid-step ranks and the sinusoidal positional encoding.
    stacked: layers of ``count`` independent members computed in one batched call (linear,
        LayerNorm, multi-head attention).
"""
