"""Runs grouped by what they compute: one group per optimizer setting, its runs the seeds.

Two runs are in one group when every key of their resolved configs is equal except the seed
and the bookkeeping keys below (where a run lives, how it logs and checkpoints, the
experiment's name). A group is labelled by its optimizer and the keys that set it apart from
the other groups of that optimizer (`muon spectral_blocks=mlp_out`, `adamw lr=0.002`), plus any
non-optimizer key that differs between groups (`adamw trainer.max_steps=500`).
"""

from __future__ import annotations

from collections.abc import Mapping

from experiments.rundir import flatten

# Keys that do not change what a run computes. `exp_name` is only a name: nanogpt_muon and
# nanogpt_muon_all are the same setting.
BOOKKEEPING = ("seed", "exp_name", "output_dir")
BOOKKEEPING_PREFIXES = ("logger.",)
BOOKKEEPING_TRAINER = (
    "resume", "stop_at_step", "progress", "keep_ckpts", "async_checkpointing", "distributed",
    "gpus_per_job", "compilation_cache_dir", "log_throughput", "peak_flops", "log_every",
    "eval_every", "ckpt_every", "spectra_every", "steps_per_dispatch",
)  # fmt: skip
BOOKKEEPING_STUDY = ("full_spectra_every", "save_params", "full_eval", "full_eval_windows")


def _is_bookkeeping(key: str) -> bool:
    section, _, name = key.partition(".")
    return (
        key in BOOKKEEPING
        or key.startswith(BOOKKEEPING_PREFIXES)
        or (section == "trainer" and name in BOOKKEEPING_TRAINER)
        or (section == "study" and name in BOOKKEEPING_STUDY)
    )


def setting(config: Mapping) -> dict:
    """The flattened config keys that decide what a run computes (the seed left out)."""
    return {k: v for k, v in flatten(config).items() if not _is_bookkeeping(k)}


def _frozen(values: Mapping) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


def _format(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def group_labels(configs: Mapping[str, Mapping]) -> dict[str, str]:
    """{run: its group's label} for `configs` ({run: resolved config}); equal settings share a
    label and different settings never do."""
    settings = {run: setting(config) for run, config in configs.items()}
    groups = {_frozen(s): s for s in settings.values()}  # one representative per group

    def differing(members, keep) -> list[str]:
        keys = sorted({k for s in members for k in s if keep(k)})
        return [k for k in keys if len({repr(s.get(k)) for s in members}) > 1]

    shared = differing(list(groups.values()), lambda k: not k.startswith("optim."))
    labels = {}
    for frozen, values in groups.items():
        name = values.get("optim.name", "no optimizer")
        same_name = [s for s in groups.values() if s.get("optim.name") == values.get("optim.name")]
        keys = differing(same_name, lambda k: k.startswith("optim.")) + shared
        parts = [f"{k.removeprefix('optim.')}={_format(values.get(k))}" for k in keys]
        labels[frozen] = " ".join([str(name), *parts])
    return {run: labels[_frozen(s)] for run, s in settings.items()}


def repeated_runs(configs: Mapping[str, Mapping]) -> list[str]:
    """Runs that repeat the setting and seed of an earlier run (in name order), e.g. an lr
    grid's seed-0 member beside the seed runs at that lr: counted once, they would weigh that
    seed twice in a mean over seeds."""
    seen, repeats = set(), []
    for run in sorted(configs):
        identity = (_frozen(setting(configs[run])), repr(configs[run].get("seed")))
        if identity in seen:
            repeats.append(run)
        seen.add(identity)
    return repeats
