"""Run-time machinery shared by every study: run context, records, logging, checkpoints, trainer.

Studies import `RunContext` (from `experiments.runtime.context`) and `train`
(from `experiments.runtime.trainer`); everything else here is an implementation detail
of those two.
"""
