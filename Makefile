# The two commands. Everything else is in scripts/ and pyproject.toml.
.PHONY: up test bench-deps

# Run the embedded platform: broker, ingest, storage, API, dashboard and a simulated fleet.
# Pass options with ARGS, e.g.  make up ARGS="--devices 50 --port 8080"
up:
	@scripts/bootstrap.sh
	@.venv/bin/edgeloop up $(ARGS)

# Set up and run the whole test suite.
test:
	@scripts/test.sh

# What `edgeloop bench edge` needs besides EdgeLoop: the ThingsBoard IoT Gateway, pinned, in .venv-tb.
bench-deps:
	@scripts/bootstrap.sh bench
