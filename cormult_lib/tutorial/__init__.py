"""The machinery that serves the notebooks, not the models: the top layer of the library.

Modules:
    runner: ``make tutorial`` / ``cormult-run``, every chapter headless with papermill.
    notebook: the harness each chapter starts with (parameters, output folders, results JSON,
        computed checks).
    plots, spectrogram_plots: the chapters' figures (chapter 01's in the second).
    probes: linear probes that read what a feature or an embedding holds.
    audio_checks: chapter 01's checks of a log-Mel spectrogram against its waveform.
    timing: wall-clock timing of a chapter's steps.
    power: how many samples would decide a comparison that its interval leaves undecided.
    chapter_sweeps: the sweeps of chapters 05 and 06 on the Optuna engine of
        :mod:`cormult_lib.training.sweep`, from one ``SweepSetup`` (data, grid, seeds, device);
        sweep_cli runs them from a shell (``cormult-sweep``).
    ddp_demo: the two-process DistributedDataParallel demonstration.
    text_baseline: chapter 09's text-only baselines on real transcripts.
    reference: ``make reference`` (results/ with provenance) and each chapter's comparison
        with its reference run; readme_results writes the README's results block from it.
    results_overview, paper_tables: chapter 10, the papers' tables beside results/.
    architecture: the architecture figures (CorMulT Fig. 2, MCE Fig. 3, CLIP-MSA Fig. 1).
    site: ``make docs``, the Sphinx site of the executed chapters.
"""

from pathlib import Path

#: The root of the source checkout: notebooks/, results/, figures/ and README.md live here.
REPO_ROOT = Path(__file__).resolve().parents[2]
