#!/usr/bin/env bash
# Prepare this checkout for building or testing the book:
#   1. a Python environment: the active virtualenv or conda env, else .venv
#   2. the project with all extras (pip install -e ".[all]"), skipped when
#      pyproject.toml has not changed since the last install
#   3. Debian packages where apt-get is available (CJK font, Chromium, Fashion-MNIST)
#   4. MNIST, from $MNIST_MIRROR when set, else from torchvision's hosts
# Prints nothing but progress lines; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${VIRTUAL_ENV:-}" ]; then
    python="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ]; then
    python="$CONDA_PREFIX/bin/python"
else
    if [ ! -x .venv/bin/python ]; then
        echo "creating virtual environment .venv"
        python3 -m venv .venv
    fi
    python=.venv/bin/python
fi

env_root=$("$python" -c 'import sys; print(sys.prefix)')
stamp="$env_root/.mnist-book-installed"
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "installing the project and its dependencies into $env_root"
    # torch and torchvision are ranges in pyproject.toml, so a preinstalled
    # build (Colab, conda) is kept rather than reinstalled.
    "$python" -m pip install --quiet --upgrade pip
    "$python" -m pip install --quiet -e ".[all]"
    echo "$wanted" > "$stamp"
fi

bash scripts/install_system_packages.sh

"$python" -m helpers.data
