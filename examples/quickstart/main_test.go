package main

import (
	"context"
	"testing"
)

func TestQuickstartRuns(t *testing.T) {
	if err := run(context.Background(), t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
