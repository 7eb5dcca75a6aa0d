# signerd developer commands. `make run` starts a local instance on SoftHSM2; `make test` runs every test
# against a real SoftHSM2 token (HSM tests fail, rather than skip, when SoftHSM2 is missing; so does the
# JOSE interop test without node/npm and the npm registry).
GO        ?= go
BIN       := bin
DEV_DIR   ?= .signerd-dev
export SIGNERD_REQUIRE_SOFTHSM ?= 1

.PHONY: all build run test bench lint vet fmt-check staticcheck proto proto-check clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: start a complete local instance on SoftHSM2 (keys, certificates and PIN under $(DEV_DIR)).
run: build
	./$(BIN)/signerd dev --dir $(DEV_DIR)

## test: vet, static checks, generated-code check and the race-enabled test suite on SoftHSM2.
test: lint proto-check
	$(GO) test -race -count=1 ./...

## bench: sign throughput through gRPC+mTLS next to crypto11 in-process, on a SoftHSM2 token.
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=1x -count=1 ./softhsm-test/

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

## proto: regenerate the committed gRPC code with the generators pinned in go.mod.
proto:
	protoc --proto_path=proto \
		--plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/signer/v1/signer.proto

## proto-check: regenerating the code and tidying go.mod must leave no diff.
proto-check: proto
	$(GO) mod tidy
	@git diff --exit-code -- proto go.mod go.sum || { echo "generated code or go.mod out of date: run 'make proto' and 'go mod tidy'"; exit 1; }

clean:
	rm -rf $(BIN)
