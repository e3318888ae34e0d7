# Shortcuts; scripts/ holds the real commands.
.PHONY: fmt lint test up down quickstart
fmt:
	cargo fmt --all
lint:
	cargo clippy --all-targets --all-features -- -D warnings
test:
	scripts/test.sh
up:
	scripts/kafka.sh start
down:
	scripts/kafka.sh stop
quickstart:
	scripts/quickstart.sh
