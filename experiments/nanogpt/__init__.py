"""NanoGPT on character-level text: model, data, pure steps and the spectra it logs.

The study that drives them is `experiments/studies/nanogpt.py`.
"""
