"""Training: one loop for every model and its uses.

Modules:
    loop: :func:`fit`, the training loop every model goes through, :class:`FitResult`, what
        every training function returns, and :class:`RunOptions`, the checkpoint and progress
        options the training functions pass on to it.
    epoch: one pass over a loader (the ``loss_fn(model, batch, generator)`` protocol).
    checkpoints: the resumable checkpoint (weights, optimiser, random streams, settings).
    early_stopping: best validation epoch, patience, the best weights.
    precision: autocast and the gradient scaler (AMP on CUDA).
    data_parallel, distributed: DistributedDataParallel setup, sharded loaders, collectives.
    pretrain: the evaluator's unsupervised pre-training (CorMulT section 3.2), save and load.
    supervised: train and evaluate a sentiment model, on subsets and over seeds.
    sweep, sweep_storage: grids x seeds as Optuna studies, shared by workers through SQLite or a
        database server.
    sweep_choice: the stated rule that chooses one point of a complete sweep (chapter 06).
"""
