#!/usr/bin/env bash
# Set-up shared by `make demo`, `make test` and CI: a project-local .venv with the
# pinned dependencies, apt's Icarus Verilog, and tool caches inside the project.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.bitsnn-installed

need_apt=()
command -v iverilog >/dev/null 2>&1 || need_apt+=(iverilog)
# a PostgreSQL server for the test of a sweep's study on it (the test starts its own)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "bitsnn: error: Python >= 3.11 is required (found: $("$PYTHON" --version 2>&1 || echo none))" >&2
    exit 1
fi
"$PYTHON" -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)

if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "bitsnn: installing ${need_apt[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        echo "bitsnn: error: missing ${need_apt[*]}; run as root or: sudo apt-get install ${need_apt[*]}" >&2
        exit 1
    fi
fi

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
    start=$(date +%s)
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    echo "bitsnn: installing pinned dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -c constraints.txt -e ".[all]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    # Norse (a NIR reader the tests check bitsnn's graphs in) declares torchvision, and neurobench
    # (`bitsnn report --neurobench`) torchaudio and its audio data sets; either would replace the
    # CPU torch with a CUDA build. What bitsnn uses of them (Norse's NIR import, neurobench's
    # metrics) needs neither, so both come without their declared requirements.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        -c constraints.txt norse neurobench 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    "$VENV/bin/python" -c 'import bitsnn, torch, amaranth, cocotb, nir, snntorch, norse.torch, neurobench.benchmarks, optuna, psycopg2' # fail here, not later, if the install broke
    if "$VENV/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
        echo "bitsnn: error: pip pulled CUDA packages; torch must be the CPU wheel" >&2
        exit 1
    fi
    touch "$STAMP"
    echo "bitsnn: dependencies installed in $(( $(date +%s) - start )) s" >&2
fi
