# layerd. `make demo` runs the main job end to end on the node-in-a-box; `make test` runs every test.
SHELL := /bin/bash
TAGS := containers_image_openpgp,exclude_graphdriver_btrfs,exclude_graphdriver_devicemapper
export GOFLAGS := -tags=$(TAGS)
export LAYERD_CACHE ?= $(HOME)/.cache/layerd
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X layerd.dev/layerd/pkg/version.Version=$(VERSION)
TEST_TIMEOUT ?= 60m
TEST_FLAGS ?=
PKGS ?= ./...

.PHONY: all build deps test unit vet fmt up down demo clean

all: build

build:
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/layerd ./cmd/layerd
	go build -trimpath -o bin/rpmostreed ./test/rpmostreed

deps:
	@hack/deps.sh >/dev/null

vet:
	go vet $(PKGS)

# Unit and e2e tests against the real parts. Fuzz targets run on their committed seeds only.
test:
	@K8S_BIN=$$(hack/deps.sh) && export LAYERD_K8S_BIN=$$K8S_BIN && hack/preflight.sh && \
	$(MAKE) --no-print-directory vet && \
	TEST_TIMEOUT=$(TEST_TIMEOUT) TEST_FLAGS="$(TEST_FLAGS)" PKGS="$(PKGS)" hack/test.sh

fmt:
	gofmt -l -w $$(git ls-files '*.go')

# Bring the node-in-a-box up for manual use (prints kubeconfig, registry, nodes); `make down` stops it.
up:
	@export LAYERD_K8S_BIN=$$(hack/deps.sh) && hack/preflight.sh && go run ./test/box up

down:
	go run ./test/box down

# The main job end to end: 3 nodes updated to a signed layered image one at a time, then an
# unsigned image refused; prints live progress and a timeline, fails unless every node booted it.
demo:
	@export LAYERD_K8S_BIN=$$(hack/deps.sh) && hack/preflight.sh && go run ./test/demo

clean:
	rm -rf bin
