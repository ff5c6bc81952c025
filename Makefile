# Carrier: the commands a newcomer needs. See README.md.
.PHONY: up down test bench fmt lint

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

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
