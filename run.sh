#!/usr/bin/env bash
# The two entry points of the README, each self-installing into ./.venv:
#   bash run.sh demo        the main job: attrfx on a real model, numbers and a picture
#   bash run.sh test [...]  the whole test suite (extra arguments go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.attrfx-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    "$py" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
    "$py" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,viz,demo,notebooks,runs]"
    touch "$stamp"
fi

case "${1:-}" in
    demo) shift; exec "$py" -m attrfx.demo "$@" ;;
    test) shift; exec "$py" -m pytest "$@" ;;
    *) echo "usage: bash run.sh demo | bash run.sh test [pytest args]" >&2; exit 2 ;;
esac
