package main

import (
	"context"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEveryViewCountedInOrderPerUser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const views = 1000
	r, err := run(ctx, t.TempDir(), views, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, p := range pages {
		total += r.PerPage[p]
		if r.PerPage[p] == 0 {
			t.Errorf("no view of %s", p)
		}
	}
	if r.Views != views || total != views || len(r.PerPage) != len(pages) {
		t.Errorf("%d views, %d per page over %d pages; want %d", r.Views, total, len(r.PerPage), views)
	}
	if r.OutOfOrder != 0 {
		t.Errorf("%d clicks out of their user's order", r.OutOfOrder)
	}
	if r.Batches >= views {
		t.Errorf("%d batches for %d views: not batched", r.Batches, views)
	}
}
