package main

import (
	"context"
	"io"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAuthorizedPaymentsAreBookedOnceDeclinedOnesNever(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := run(ctx, t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"p-1", "p-4"}; !reflect.DeepEqual(o.Authorized, want) {
		t.Errorf("authorized %v, want %v", o.Authorized, want)
	}
	if want := map[string]string{"p-2": "card_declined", "p-3": "fraud_suspected"}; !reflect.DeepEqual(o.Declined, want) {
		t.Errorf("declined %v, want %v", o.Declined, want)
	}
	if want := map[string]int{"p-1": 25_00, "p-4": 99_99}; !reflect.DeepEqual(o.Ledger, want) {
		t.Errorf("ledger %v, want %v", o.Ledger, want)
	}
	if o.Attempts < 3 {
		t.Errorf("%d bank calls: the failed first one was not retried", o.Attempts)
	}
}
