"""Packaging: the bare library works without the experiment framework's packages, and every
third-party module imported by `specjax/` (or `experiments/`) is declared in pyproject.toml."""

import ast
import importlib.metadata
import pathlib
import re
import subprocess
import sys
import textwrap
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Top-level modules of the `experiments` extra (and the framework itself): `specjax` must not
# need any of them.
BLOCKED = (
    "experiments", "flax", "hydra", "omegaconf", "orbax", "wandb", "matplotlib", "pyarrow",
    "pandas", "rich", "platformdirs", "yaml", "sklearn", "tensorstore",
)  # fmt: skip

LIGHT_SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = set(sys.argv[1].split(","))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the bare library must not need it")
            return None

    sys.meta_path.insert(0, Blocker())

    import jax.numpy as jnp
    import optax

    import specjax
    import specjax.diagnostics
    import specjax.ntk
    import specjax.optim

    sr = float(specjax.stable_rank(jnp.array([[3.0, 0.0], [0.0, 4.0]])))
    assert abs(sr - 25.0 / 16.0) < 1e-5, sr

    params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}
    grads = {"dense": {"kernel": jnp.arange(12.0).reshape(4, 3), "bias": jnp.ones(3)}}
    tx = specjax.optim.muon(1e-2)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert bool(jnp.all(jnp.isfinite(new["dense"]["kernel"])))
    assert not bool(jnp.allclose(new["dense"]["kernel"], params["dense"]["kernel"]))

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("OK")
    """
)


def test_bare_library_works_without_experiment_packages():
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT_SCRIPT, ",".join(BLOCKED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK"), proc.stdout


# Import names whose distribution is spelled differently (used when the package is not
# installed; otherwise importlib.metadata.packages_distributions() answers).
DISTRIBUTIONS = {
    "yaml": "PyYAML",
    "sklearn": "scikit-learn",
    "hydra": "hydra-core",
    "orbax": "orbax-checkpoint",
    "jaxlib": "jaxlib",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(package: str) -> dict[str, str]:
    """{top-level module: first file importing it} over every import (module level and lazy)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("specjax", package):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def distribution(module: str) -> str:
    if module in DISTRIBUTIONS:
        return canonical(DISTRIBUTIONS[module])
    dists = importlib.metadata.packages_distributions().get(module)
    return canonical(dists[0] if dists else module)


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.match(r"[A-Za-z0-9._-]+", r.strip()).group(0)) for r in requirements}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.mark.parametrize(
    ("package", "groups"),
    [("specjax", ()), ("experiments", ("experiments",))],
)
def test_every_imported_package_is_declared(package, groups):
    declared = requirement_names(PROJECT["dependencies"])
    for group in groups:
        declared |= requirement_names(PROJECT["optional-dependencies"][group])
    imports = third_party_imports(package)
    assert imports, package
    missing = {m: f for m, f in imports.items() if distribution(m) not in declared}
    assert not missing, f"imported by {package}/ but not declared: {missing}"


def test_library_dependencies_are_only_what_specjax_imports():
    declared = requirement_names(PROJECT["dependencies"])
    imported = {distribution(m) for m in third_party_imports("specjax")}
    assert declared <= imported, f"declared but not imported by specjax/: {declared - imported}"
    assert all(">=" in r and "<" not in r for r in PROJECT["dependencies"])  # lower bounds only


def test_py_typed_is_shipped():
    assert (ROOT / "specjax" / "py.typed").exists()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["package-data"]
    assert "py.typed" in package_data["specjax"]
