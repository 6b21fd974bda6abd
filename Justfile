# Developer recipes.  `just --list` shows them.  Run from a venv with `pip install -e '.[test]'`.
python := env_var_or_default("PYTHON", ".venv/bin/python")

# Compile the Cython modules in place.
build:
    {{python}} setup.py build_ext --inplace -j 2

# The whole test suite (needs root for the namespace tests).
test *ARGS: build
    {{python}} -m pytest -q {{ARGS}}

# Run the daemon in the foreground on IFACE (default wg0) with debug logging.
run IFACE="wg0": build
    LOG_LEVEL=verbose {{python}} -m wgc -f {{IFACE}}

# Two namespaces, a wgc tunnel between them, a ping across, `wg show`, then clean up.
demo: build
    PYTHON={{python}} bash scripts/demo.sh
