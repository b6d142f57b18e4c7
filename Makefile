# One command each; the scripts do the work (and make .venv the first time).
# Arguments go through ARGS, e.g. make bench ARGS="--n 50 --json".

ARGS ?=

.PHONY: bench test dev check

# About 10 minutes on two cores; see docs/performance.md.
bench:
	scripts/bootstrap
	.venv/bin/python -m tools.bench $(ARGS)

test:
	scripts/test $(ARGS)

dev:
	scripts/dev $(ARGS)

check:
	scripts/check
