package main

import (
	"context"
	"testing"
)

func TestOrderCompletes(t *testing.T) {
	if err := run(context.Background(), t.TempDir(), false); err != nil {
		t.Fatal(err)
	}
}

func TestDeclinedPaymentReleasesTheReservation(t *testing.T) {
	if err := run(context.Background(), t.TempDir(), true); err != nil {
		t.Fatal(err)
	}
}
