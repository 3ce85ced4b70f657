"""`python -m experiments.sample RUN_DIR [--step N] [options]`: text from a nanogpt run's GPT.

The parameters are the run's final ones (`final_params.msgpack`), or with `--step N` those of
its orbax checkpoint `RUN_DIR/checkpoints/N` (restored and verified against its fingerprint).
Sampling is seeded (same arguments ⇒ same text): token t+1 ~ softmax(logits_t / T) restricted
to the top-k logits, the key for each token is `fold_in(PRNGKey(seed), t)`.

    python -m experiments.sample outputs/nanogpt_muon/<time> --step 1000 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def generate(gpt, params, prompt_tokens, num_tokens: int, temperature: float, top_k: int, seed):
    """Autoregressive sampling with a sliding context window; returns the new token ids."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k!r}")
    T = gpt.config.context_length
    k = min(top_k, gpt.config.vocab_size)

    @jax.jit
    def next_token(window_1xT, length, key):
        logits = gpt.apply({"params": params}, window_1xT)[0, length - 1] / temperature
        threshold = jax.lax.top_k(logits, k)[0][-1]
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
        return jax.random.categorical(key, logits)

    tokens = [int(t) for t in prompt_tokens]
    base = jax.random.PRNGKey(seed)
    for i in range(num_tokens):
        context = tokens[-T:]
        window = np.zeros((1, T), np.int32)  # right-padded: causal attention ignores the pad
        window[0, : len(context)] = context
        tokens.append(int(next_token(window, len(context), jax.random.fold_in(base, i))))
    return tokens[len(prompt_tokens) :]


def checkpoint_steps(run_dir: str | pathlib.Path) -> list[int]:
    """The steps with a checkpoint directory under RUN_DIR/checkpoints, ascending."""
    from experiments import rundir

    directory = pathlib.Path(run_dir) / rundir.CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _model_and_chars(run_dir: str | pathlib.Path):
    """(GPT, chars) from the run's `nanogpt.json` (written by the study when the run ends)."""
    import json

    from experiments import rundir
    from experiments.nanogpt.model import GPT, GPTConfig

    meta_path = pathlib.Path(run_dir) / rundir.MODEL_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: RUN_DIR must be the directory of a finished nanogpt run"
        )
    meta = json.loads(meta_path.read_text())
    return GPT(GPTConfig(**meta["model"])), meta["chars"]


def load_checkpoint_params(run_dir: str | pathlib.Path, step: int):
    """(GPT, params, chars) with the parameters of checkpoint `step` of a nanogpt run.

    The restore target is the train state `experiments.nanogpt.step.init_state` builds from the
    run's saved model and optimizer config, so orbax restores (and verifies) exactly what the
    trainer saved.
    """
    from omegaconf import OmegaConf

    from experiments import rundir
    from experiments.nanogpt import step as step_lib
    from experiments.optimizers import OPTIMIZERS
    from experiments.runtime.checkpoint import Checkpoints, abstract_with_sharding

    available = checkpoint_steps(run_dir)
    if step not in available:
        where = pathlib.Path(run_dir) / rundir.CHECKPOINT_DIR
        raise ValueError(
            f"--step {step}: no checkpoint for that step in {where}; available steps: "
            f"{available or 'none (the run saved no checkpoints; see trainer.ckpt_every)'}"
        )
    gpt, chars = _model_and_chars(run_dir)
    config = rundir.load_run(run_dir).config
    try:  # the optimizer config as this code types it: its state is part of the checkpoint
        saved = config["optim"]
        optim = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(OPTIMIZERS[saved["name"]]),
                                                    saved))  # fmt: skip
        tx = optim.build(config["trainer"]["max_steps"])
    except Exception as err:  # a config from an older version of the code
        raise ValueError(f"cannot rebuild the optimizer of {run_dir} from its config.yaml "
                         f"({type(err).__name__}: {err})") from err  # fmt: skip
    abstract = jax.eval_shape(lambda: step_lib.init_state(gpt, tx, jax.random.PRNGKey(0)))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's read-only notices are noise
    ckpts = Checkpoints(pathlib.Path(run_dir) / rundir.CHECKPOINT_DIR, keep=1, read_only=True)
    try:
        state, _ = ckpts.restore(abstract_with_sharding(abstract, sharding), step)
    finally:
        ckpts.close()
    return gpt, state["params"], chars


def load_params(run_dir: str | pathlib.Path, step: int | None = None):
    """(GPT, params, chars): the final parameters, or those of checkpoint `step`."""
    if step is not None:
        return load_checkpoint_params(run_dir, step)
    from experiments.studies.nanogpt import load_for_sampling

    return load_for_sampling(run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sample",
        description=__doc__.split("\n", 1)[1].strip(),  # the docstring after its usage line
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="directory of a finished nanogpt run")
    parser.add_argument("--step", type=int, default=None, metavar="N",
                        help="use checkpoint N's parameters (default: the final ones)")  # fmt: skip
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--tokens", type=int, default=500, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature > 0")
    parser.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = parser.parse_args(argv)
    if args.tokens < 1:
        parser.error(f"--tokens must be >= 1, got {args.tokens}")
    try:
        gpt, params, chars = load_params(args.run_dir, args.step)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    index = {c: i for i, c in enumerate(chars)}
    unknown = sorted(set(args.prompt) - set(index))
    if unknown or not args.prompt:
        parser.error(f"--prompt must be non-empty and use the run's characters; unknown: {unknown}")
    prompt = [index[c] for c in args.prompt]
    new = generate(gpt, params, prompt, args.tokens, args.temperature, args.top_k, args.seed)
    sys.stdout.write(args.prompt + "".join(chars[t] for t in new) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
