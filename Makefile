# The two commands of the README: `make demo` and `make test`.
.PHONY: all setup build test rust-test ct demo bench lint clean reliability

all: build

setup:
	bash scripts/setup.sh

build:
	rebar3 compile

rust-test:
	cargo test -p mongoose_native

ct: build
	@# On failure, name the failed cases last, where a CI log's tail shows them.
	rebar3 ct || { bash scripts/ct_failures.sh; exit 1; }

test: setup rust-test ct

# The reliability suite (issue 21; README "Reliability") alone, with its
# results table; `make test` runs its parts among the rest.
reliability: setup build
	bash scripts/reliability.sh

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	rebar3 dialyzer

demo: setup build
	@# Beside the application, not in its ebin: dialyzer reads that one.
	mkdir -p _build/demo
	erlc -o _build/demo examples/mongoose_native_demo*.erl
	erl -sname mongoose_native_demo_$$$$ -noshell -pa _build/default/lib/mongoose_native/ebin -pa _build/demo \
	    -eval 'mongoose_native_demo:run("examples/demo_pools.toml"), halt().'

clean:
	rm -rf _build priv/*.so
