#!/bin/sh
# ansible-test bootstraps pip in each sanity virtual environment with a
# "get-pip" script downloaded from a host this machine cannot reach, unless
# ~/.ansible/test/cache/get_pip_<version>.py exists. This writes that file:
# it runs pip from the pip wheel (taken from PyPI) to install pip itself.
set -eu
# The pip version ansible-test bootstraps, read from its own source.
version=$(python3 -c 'import ansible_test._internal.python_requirements as r, inspect, re
print(re.search(r"pip=.([0-9.]+).", inspect.getsource(r)).group(1))')
cache=$HOME/.ansible/test/cache
script=$cache/get_pip_$(echo "$version" | tr . _).py
wheel=$cache/pip-$version-py3-none-any.whl
[ -f "$script" ] && [ -f "$wheel" ] && exit 0
mkdir -p "$cache"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$cache" "pip==$version"
cat > "$script" <<PY
# Written by tests/sanity/prepare-get-pip.sh: install pip from its own wheel.
import runpy
import sys

sys.path.insert(0, "$wheel")
sys.argv = ["pip", "install"] + [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
PY
echo "[sanity] wrote $script"
