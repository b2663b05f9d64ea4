"""Features: CorMulT section 3.2.1, from raw clips to the model inputs F_A, F_T and F_V.

* :mod:`~cormult_lib.features.audio` — STFT, Mel filter bank and log-Mel spectrogram from the
  paper's equations (F_A, ``(batch, frames, n_mels)``) and audio loading;
* :mod:`~cormult_lib.features.text` — BERT tokenizer, the dataset vocabulary V and token ids
  (F_T, ``(batch, s)``);
* :mod:`~cormult_lib.features.vision` — frames with OpenCV, face crops, ResNet features
  (F_V, ``(batch, f, i)``);
* :mod:`~cormult_lib.features.cache` — the on-disk per-clip feature cache both pipelines
  write and read (manifest, per-clip report, atomic entries, resume, loading into splits);
* :mod:`~cormult_lib.features.pipeline` — a folder of clips to CorMulT's features (F_A, F_T,
  F_V) in a cache (``cormult-extract``);
* :mod:`~cormult_lib.features.loading` — :func:`load_splits`, every data source as the
  ``{"train", "valid", "test"} -> MultimodalSplit`` a chapter trains on;
* :mod:`~cormult_lib.features.sources` — where CLIP-MSA's pretrained encoders come from
  (hub names, local folders, ``"tiny"`` random ones, VGG-11 weights);
* :mod:`~cormult_lib.features.clip_encoders` — CLIP-MSA's dual-branch encoders (ALBERT,
  CLIP, wav2vec 2.0, CLAP, VGG-11) behind one class;
* :mod:`~cormult_lib.features.clip_msa_cache` — their outputs cached per clip, and raw clips
  prepared for fine-tuning;
* :mod:`~cormult_lib.features.raw_inputs` and :mod:`~cormult_lib.features.sentence_cache` —
  features of the synthetic corpus's rendered clips, and cached sentence embeddings.

The submodules are imported on demand: they pull in transformers and torchvision.
"""
