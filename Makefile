# Carrier: the commands a newcomer needs. See README.md.
.PHONY: up down test bench bench-rolling chaos fmt lint

## Bring up infrastructure (Tansu, Postgres, Redis), build, start the four services and a sample
## receiver in the background, and send a sample message through. Safe to run again.
up:
	@bash scripts/up.sh

## Stop everything `make up` started.
down:
	@bash scripts/down.sh

## Run every test against real infrastructure (installed and started when missing).
test:
	@bash scripts/test.sh

## Ingress and end-to-end benchmark against the running stack (`make up` first).
bench:
	@bash scripts/bench.sh

## The rolling-restart benchmark: the longest healthy delivery gap while three delivery replicas
## are replaced one by one, before and after the hand-over work; .run/bench-rolling/results.md.
bench-rolling:
	@bash scripts/bench-rolling-restart.sh

## The fault matrix: release binaries under load through kills, restarts, outages and network
## faults, each scenario on infrastructure of its own; results in .run/chaos/results.md.
## CHAOS_ARGS="--short" runs the shortened matrix, CHAOS_ARGS="--only NAME,..." some scenarios.
chaos:
	@bash scripts/chaos.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
