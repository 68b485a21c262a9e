# Everything a user or CI runs. MNIST_DIR defaults to data/mnist (what `make data` fills);
# this repository's CI points it at ../shared/mnist.
MNIST_DIR ?= data/mnist
export MNIST_DIR
CARGO ?= cargo

.PHONY: all build train eval robustness serve test browser-test interop-test api-fuzz fuzz lint fmt data bench user clean

all: build

build:
	$(CARGO) build --release --bins

## train: fit the CNN with the defaults and write weights/mnist_cnn.safetensors
train:
	$(CARGO) run --release --bin train -- --confusion

## eval: test-set accuracy of the committed weights
eval:
	$(CARGO) run --release --bin train -- --eval weights/mnist_cnn.safetensors

## robustness: accuracy of the committed weights on corrupted test digits, through the server's preprocessing
robustness:
	$(CARGO) run --release --bin train -- --robustness --eval weights/mnist_cnn.safetensors

## serve: run the API on 127.0.0.1:8080 with the committed weights
serve:
	$(CARGO) run --release --bin mnist-api

## test: the whole suite (unit, black-box HTTP, committed-weights accuracy)
test:
	$(CARGO) test --all-targets

## browser-test: the web page end to end in headless Chromium (installs chromium / npm ci when missing)
browser-test:
	scripts/browser-test.sh

## interop-test: tritonclient[http] and kserve (pinned, PyPI, in a venv) against the /v2 API, answers compared with /predict
interop-test:
	scripts/interop-test.sh

## api-fuzz: schemathesis (pinned, PyPI) against the running server's /openapi.json, every check
api-fuzz:
	scripts/api-fuzz.sh

## fuzz: libFuzzer on the stable toolchain, every target FUZZ_SECONDS (default 60) in turn
fuzz:
	scripts/fuzz.sh

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## data: download the four MNIST files into $(MNIST_DIR), checksums verified
data:
	$(CARGO) run --release --bin train -- --download --data-dir $(MNIST_DIR)

## bench: criterion benchmarks, the loopback load test against the original Flask app, tracing's cost per exporter, per-request overhead against af2275c, then the soak and login flood
bench:
	$(CARGO) bench --bench inference
	$(CARGO) bench --bench training_step
	benches/load.sh
	benches/tracing.sh
	benches/overhead.sh
	benches/hostile.sh
	benches/v2.sh
	benches/reload.sh

clean:
	$(CARGO) clean
