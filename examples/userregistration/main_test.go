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

func TestEveryUserIsWelcomedOnceAndDuplicatesAreRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := run(ctx, t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := &Outcome{
		Users:    map[string]string{"ada@example.com": "u-1", "grace@example.com": "u-2", "alan@example.com": "u-3"},
		Emails:   []string{"ada@example.com: Welcome, Ada", "alan@example.com: Welcome, Alan", "grace@example.com: Welcome, Grace"},
		Profiles: []string{"u-1", "u-2", "u-3"},
		Refused:  []string{"ADA@example.com (email_taken)"},
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("outcome\n%+v\nwant\n%+v", o, want)
	}
}
