"""Building blocks shared by the correlation evaluator and the sentiment models.

Modules:
    attention: multi-head attention, the transformer encoder layer and stack (MulT's).
    checks: the one validation of a batch of features and masks.
    pooling: masked mean and last valid step of a padded sequence.
    functional: dropout masks and attention for small models on the CPU (PyTorch's fused
        kernels on CUDA).
    positions: valid-step ranks and the sinusoidal positional encodings (the tutorial's
        interleaved table and fairseq's, for official MulT checkpoints).
    stacked: layers of ``count`` independent members computed in one batched call (linear,
        LayerNorm, multi-head attention).
"""
