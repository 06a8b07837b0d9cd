# senti: the two commands a newcomer needs are `make run` and `make test`.
# Everything else is optional: see README.md.
SHELL := /bin/bash
CARGO ?= cargo
TRAIN_VENV := .cache/venv-train
TRAIN_PY := $(TRAIN_VENV)/bin/python
# Model 2.0.0 starts from 1.1.0's encoder and classifier (its fp32 graph, as committed in 08dd09b,
# the output of make model on a clean tree of d3a1610).
INIT_COMMIT := 08dd09b
INIT_RECIPE_COMMIT := d3a1610
INIT_SHA256 := f30024b79bb5bc71dbb6022d09f5004b27e335671f11802c03705989add7131c
INIT_ONNX := .cache/init/senti-zh-small-1.1.0.onnx

.PHONY: run test lan-suite soak setup build lint cluster prometheus prometheus-check simulate sim-report fuzz model model-pretrain model-init-rebuild model-ablation model-sweep bench-model bench bench-node bench-ab bench-cache bench-cache-policies bench-vs-nginx bench-cluster bench-cluster-shape bench-session-tls hunt-errors web-test clean-cache

## Serve the embedded default model on http://127.0.0.1:8080
run: setup
	$(CARGO) run --release -p senti-node --bin senti -- serve

## Every test: unit, property, API contract, model parity, multi-process, multi-host (network
## namespaces, as root; installs nftables if missing), browser
test: setup
	$(CARGO) build -p senti-node --bin senti
	bash scripts/install-nftables.sh
	bash scripts/prometheus-check.sh
	$(CARGO) test --workspace --no-fail-fast
	bash tests/web/run.sh

## The LAN suite alone, with its figures: network-namespace hosts (HOSTS=3, or more) running the
## shipped cluster-config/lan-node.toml, load from a client host; SIGKILL + restart, full and
## one-way partitions, SIGSTOP, packet loss, link down, delayed sessions and a rolling restart
## (root; about a minute; docs/reliability.md)
lan-suite: setup
	$(CARGO) build -p senti-node --bin senti
	bash scripts/install-nftables.sh
	SENTI_LAN_HOSTS=$${HOSTS:-3} $(CARGO) test -p senti-system-tests --test lan -- --nocapture --test-threads 1

## The soak: the LAN suite's hosts under mixed load for MINUTES (default 60) with a fault every
## FAULT_EVERY seconds (default 150); 0 failed requests through healthy entries and flat memory
## on the node never touched (root; docs/reliability.md). FAULTS=one-way,kill,... repeats only
## those kinds (partition, stop, kill, one-way, loss, link-down, drain, delay)
soak: setup
	$(CARGO) build -p senti-node --bin senti
	bash scripts/install-nftables.sh
	SENTI_SOAK_MINUTES=$${MINUTES:-60} SENTI_SOAK_FAULT_EVERY_S=$${FAULT_EVERY:-150} SENTI_LAN_HOSTS=$${HOSTS:-3} \
	  SENTI_SOAK_FAULTS=$${FAULTS:-} \
	  $(CARGO) test -p senti-system-tests --test lan -- --ignored --nocapture --test-threads 1 soak

## The shipped Prometheus files: promtool check config/rules and the alert rules' unit tests
## (installs Debian's prometheus package if missing). The live checks are `make test`'s
## tests/tests/prometheus.rs (a real Prometheus scrapes a 3-node cluster) and dashboard.rs.
prometheus-check:
	bash scripts/prometheus-check.sh

## Prometheus on http://127.0.0.1:9090 scraping `make cluster` with the shipped configuration
## and alert rules (cluster-config/prometheus/prometheus.yml; data in .cache/prometheus)
prometheus:
	bash scripts/install-prometheus.sh
	prometheus --config.file=cluster-config/prometheus/prometheus.yml \
	  --storage.tsdb.path=.cache/prometheus --web.listen-address=127.0.0.1:9090

## Three nodes on this machine (cluster-config/node-{a,b,c}.toml), HTTP on 127.0.0.1:8080-8082
cluster: setup
	bash scripts/cluster-local.sh

## The decoders under random and mutated input, a million cases each (gossip messages past the
## seal, sealed datagrams, remote-actor requests and replies); `make test` runs 20,000 of each
## (about a minute after the build; SENTI_FUZZ_CASES=N for another count)
fuzz:
	SENTI_FUZZ_CASES=$${SENTI_FUZZ_CASES:-1000000} $(CARGO) test --workspace --lib random_and_mutated -- --nocapture

## Random fault schedules over many seeds on the simulated cluster; prints any seed that breaks an
## invariant (SEEDS=200 FROM=1; replay one: target/release/senti-simulate --seed N --verbose)
simulate:
	$(CARGO) run --release -p senti-simulations --bin senti-simulate -- --seeds $${SEEDS:-200} --from $${FROM:-1}

## Routing-quality report: simulated p99 of each placement policy on equal nodes (8, 32, 128) and,
## at 32 nodes, on unequal nodes, a slowed node, one entry gateway and bursts (tables on stdout,
## plots into docs/img/routing-p99-*.svg; about 5 minutes; see docs/simulations.md)
sim-report:
	$(CARGO) build --release -p senti-simulations --bin senti-sim-report
	target/release/senti-sim-report
	target/release/senti-sim-report --nodes 32 --variants unequal,slowed,one-entry,bursts

## ONNX Runtime (pinned PyPI wheel, hash-checked) into .cache/onnxruntime/
setup:
	@bash scripts/setup-onnxruntime.sh

build: setup
	$(CARGO) build --release -p senti-node --bin senti

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Train the default model into models/senti-zh-small/ (needs PyTorch; see docs/models.md for the time).
## It starts from model 1.1.0's weights, taken from git (commit 08dd09b) into .cache/init/.
model: $(TRAIN_PY) $(INIT_ONNX)
	cd models/train && ../../$(TRAIN_PY) train.py

## make model's first step alone, cached in .cache/pretrain/: masked-language modelling continued from
## 1.1.0's encoder (train.py --continue-mlm-epochs); make model runs it too when it is not cached
model-pretrain: $(TRAIN_PY) $(INIT_ONNX)
	cd models/train && ../../$(TRAIN_PY) train.py --pretrain-only

## The ablations of docs/models.md (shorter runs; results in models/train/ablations/)
model-ablation: $(TRAIN_PY) $(INIT_ONNX)
	cd models/train && ../../$(TRAIN_PY) ablation.py

$(INIT_ONNX):
	mkdir -p $(dir $@)
	git show $(INIT_COMMIT):models/senti-zh-small/model.onnx > $@.tmp
	echo "$(INIT_SHA256)  $@.tmp" | sha256sum -c --quiet
	mv $@.tmp $@

## Optional, instead of taking 1.1.0 from git: rebuild its model.onnx with its own pipeline (commit
## d3a1610's models/, about 90 minutes on 2 cores); fails unless the file is byte-identical to INIT_SHA256
model-init-rebuild: $(TRAIN_PY)
	rm -rf .cache/init/rebuild-1.1.0 && mkdir -p .cache/init/rebuild-1.1.0/src
	git archive $(INIT_RECIPE_COMMIT) models/train models/export | tar -x -C .cache/init/rebuild-1.1.0/src
	cd .cache/init/rebuild-1.1.0/src/models/train && $(abspath $(TRAIN_PY)) train.py --data $(abspath ../shared/data) --out $(abspath .cache/init/rebuild-1.1.0/model)
	echo "$(INIT_SHA256)  .cache/init/rebuild-1.1.0/model/model.onnx" | sha256sum -c
	cp .cache/init/rebuild-1.1.0/model/model.onnx $(INIT_ONNX)

## Size and pre-training comparison (shorter runs, results in models/train/sweeps/)
model-sweep: $(TRAIN_PY)
	cd models/train && ../../$(TRAIN_PY) sweep.py

## StructBERT-base-sized random model for performance work, into models/bench/ (ignored, ~400 MB)
bench-model: $(TRAIN_PY)
	$(TRAIN_PY) models/export/export.py --random-base models/bench/structbert-base-random

## senti against the recipe it replaces (Flask + gunicorn + nginx peers, benches/peers/) and against
## the hardware, on the default and the StructBERT-base-sized model; installs nginx and the peers'
## Python packages; tables and plots into bench-results/ (about 25 minutes; QUICK=1 smoke run)
bench: setup
	CARGO="$(CARGO)" bash scripts/bench.sh

## Raw ONNX Runtime vs senti over HTTP, side by side (about 5 minutes; QUICK=1 for a smoke run)
bench-node: setup
	CARGO="$(CARGO)" bash scripts/bench-node.sh

## Two settings of one binary side by side, e.g. A="SENTI__ADVANCED__BATCHES_AHEAD=1" B="SENTI__ADVANCED__BATCHES_AHEAD=2"
## (ROUNDS=3 CONCURRENCIES="1 5 20" or RATES="54" for open loop, ROUTE=analyze; about ROUNDS x loads x 24 s)
bench-ab: setup
	CARGO="$(CARGO)" bash scripts/bench-ab.sh

## Offline: hit rates of the cache's eviction policy (S3-FIFO) against LRU and W-TinyLFU, and of
## text-affine placement against entering any node, on senti-loadgen's traces (about a minute)
bench-cache-policies:
	$(CARGO) build --release --workspace --bin senti-cache-policies
	target/release/senti-cache-policies

## The result cache off and on, side by side: throughput, p50, p99 and hit rate on a trace of real
## reviews (0.5% repeats, as in the public review sets) and a template-heavy one (30%, assumed);
## a hit's latency; senti_cache_bytes within a 1 MiB bound under distinct texts (about 7 minutes;
## QUICK=1 for a smoke run; docs/cache.md)
bench-cache: setup
	CARGO="$(CARGO)" bash scripts/bench-cache.sh

## nginx least_conn and round robin over three standalone senti nodes against the same nodes as
## one senti cluster (clients on one node, then spread), unequal nodes (one has a core alone, two
## share the other): open loads, a node slowed, a node killed; installs nginx (about 20 minutes;
## QUICK=1 for a smoke run)
bench-vs-nginx: setup
	CARGO="$(CARGO)" bash scripts/bench-vs-nginx.sh

## What TLS costs a remote hop: two-node loopback clusters with plaintext and with mutual-TLS
## sessions, alternating, local and remote p50/p99 side by side (about 2 minutes; QUICK=1 smoke run)
bench-session-tls: setup
	CARGO="$(CARGO)" bash scripts/bench-session-tls.sh

## Errors where there should be none: two equal loopback nodes under even, moderate load for
## ROUNDS x DURATION (default 5 x 60 s); every request must succeed (QUICK=1: one 10 s round)
hunt-errors: setup
	CARGO="$(CARGO)" bash scripts/hunt-errors.sh

## Gossip failure detector of a 3-node loopback cluster per interval x phi (about 6 minutes; QUICK=1 for a smoke run)
bench-cluster: setup
	CARGO="$(CARGO)" bash scripts/bench-cluster.sh

## Routing cost per decision, remote hop vs local latency, two 1-core nodes vs one (about 2 minutes; QUICK=1 for a smoke run)
bench-cluster-shape: setup
	CARGO="$(CARGO)" bash scripts/bench-cluster-shape.sh

$(TRAIN_PY): models/train/requirements.txt
	python3 -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -r models/train/requirements.txt
	touch $(TRAIN_PY)

clean-cache:
	rm -rf .cache
