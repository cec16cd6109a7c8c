#!/usr/bin/env bash
# Runs the project's checks, as CI does: starts the services the tests need,
# then gofmt, go vet, staticcheck and the race-enabled test suite. With CI set in the
# environment, a test that cannot reach its service fails instead of
# skipping (see internal/testenv). Exits non-zero if any step failed; the
# go test output comes last so its closing lines tell the result.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

echo "== scripts/services.sh (CI=${CI:-unset})"
./scripts/services.sh

status=0
echo "== gofmt -l ."
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
	echo "not gofmt-formatted:" >&2
	echo "$unformatted" >&2
	status=1
fi

echo "== go vet ./..."
go vet ./... || status=1

if [[ -f bench/go.mod ]]; then
	echo "== (cd bench && go vet ./...)"
	(cd bench && go vet ./...) || status=1
fi

# staticcheck, pinned; go run builds it once into the build cache.
staticcheck="honnef.co/go/tools/cmd/staticcheck@v0.8.2"
echo "== staticcheck ./..."
go run "$staticcheck" ./... || status=1
if [[ -f bench/go.mod ]]; then
	echo "== (cd bench && staticcheck ./...)"
	(cd bench && go run "$staticcheck" ./...) || status=1
fi

echo "== go test -race -count=1 -timeout 15m ./..."
go test -race -count=1 -timeout 15m ./... || status=1

if [[ $status -ne 0 ]]; then
	echo "test.sh: FAILED (see go vet and go test output above)" >&2
fi
exit "$status"
