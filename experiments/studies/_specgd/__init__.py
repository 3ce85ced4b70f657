"""Davis & Drusvyatskiy (2025), "When do spectral gradient updates help in deep learning?".

Pure pieces of the reproduction (float64, full batch): random-feature least-squares
problems (`problems`), the GD / SpecGD steps and their jitted trajectories (`steps`), the
one-step comparison (`one_step`), the sparse-regression MLP (`sparse_mlp`) and the figures
(`plots`). The study entry points are `experiments.studies.spiked_rf` and friends.
"""
