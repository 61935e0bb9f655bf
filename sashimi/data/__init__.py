"""Data: reading and writing audio, file lists and class labels, waveform datasets, resumable
sampling and collation, and train / valid / test splits of known datasets.

Used by training, evaluation, the command line and the benchmarks; it knows nothing of models.

- :mod:`~sashimi.data.audio`: WAV (and other soundfile formats) reading, writing, resampling;
- :mod:`~sashimi.data.datasets`: file lists and labels, cropped / utterance datasets, samplers, collation;
- :mod:`~sashimi.data.split`: CSV splits of FSDD and Speech Commands (SC09).
"""
