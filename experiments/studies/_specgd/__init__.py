"""Davis & Drusvyatskiy (2025), "When do spectral gradient updates help in deep learning?".

Pure float64, full-batch pieces of the reproduction; the studies that run them are
`experiments.studies.{spiked_rf, spiked_rf_sweep, one_step_check, sparse_regression}`.
"""
