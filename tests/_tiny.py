"""Overrides of the tiny NanoGPT runs the tests make (no imports: cheap at collection)."""

# The model and data of every tiny NanoGPT test run: one 16-wide layer, context 8, batch 4, the
# offline stdlib corpus. Each test adds its own cadences and lengths.
TINY_NANOGPT = {
    "data": "stdlib_source", "model.num_layers": 1, "model.width": 16, "model.num_heads": 2,
    "model.context_length": 8, "study.batch_size": 4, "trainer.progress": "off",
}  # fmt: skip


def tiny_nanogpt(exp: str, settings: dict) -> list[str]:
    """Overrides of a tiny `+exp=nanogpt_<exp>` run: `TINY_NANOGPT`, then `settings` (which may
    replace any of its keys)."""
    return [f"+exp=nanogpt_{exp}", *(f"{k}={v}" for k, v in {**TINY_NANOGPT, **settings}.items())]
