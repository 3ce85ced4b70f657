"""Run-time machinery of every study; studies use only `context.RunContext` and `trainer.train`."""
