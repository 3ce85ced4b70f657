"""NanoGPT on character-level text: model, data, steps and spectra (run by `studies/nanogpt.py`)."""
