"""Features: CorMulT section 3.2.1, from raw clips to the model inputs F_A, F_T and F_V.

* :mod:`~cormult_lib.features.audio` — STFT, Mel filter bank and log-Mel spectrogram from the
  paper's equations (F_A, ``(batch, frames, n_mels)``) and audio loading;
* :mod:`~cormult_lib.features.text` — BERT tokenizer, the dataset vocabulary V and token ids
  (F_T, ``(batch, s)``);
* :mod:`~cormult_lib.features.vision` — frames with OpenCV, face crops, ResNet features
  (F_V, ``(batch, f, i)``);
* :mod:`~cormult_lib.features.pipeline` — a folder of clips to an on-disk feature cache;
* :mod:`~cormult_lib.features.clip_msa` — CLIP-MSA's frozen dual-branch encoders (ALBERT,
  CLIP, wav2vec 2.0, CLAP, VGG-11) and their per-clip cache.

The submodules are imported on demand: they pull in transformers and torchvision.
"""
