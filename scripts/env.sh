# Sourced by the scripts: builds against the project's Python environment's libtorch.
# Everything lives under the repository (.venv, target), so a fresh clone is self-contained.
JEREX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export JEREX_ROOT
export VIRTUAL_ENV="$JEREX_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# Two cores: keep the build from thrashing while other work runs.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
