# Two entry points of the README quick start; both set up .venv/ first when needed.
.PHONY: setup demo test

setup:
	@scripts/setup_env.sh

demo: setup
	.venv/bin/bev-quant demo

test: setup
	.venv/bin/python -m pytest
