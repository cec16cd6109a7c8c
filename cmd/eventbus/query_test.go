package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
)

func startInventory(t *testing.T) string {
	srv := startServer(t)
	startBus(t, srv, func(b *eventbus.Bus) {
		if _, err := b.HandleQuery(context.Background(), "inventory", "stock.get", eventbus.TypedQuery(func(_ context.Context, _ *eventbus.Message, sku string) (int, error) {
			if sku != "sku-1" {
				return 0, eventbus.Errorf("not_found", "no such sku %q", sku)
			}
			return 42, nil
		})); err != nil {
			t.Fatal(err)
		}
		if _, err := b.HandleQuery(context.Background(), "inventory", "stock.slow", eventbus.QueryHandlerFunc(func(ctx context.Context, _ *eventbus.Message) (*eventbus.Message, error) {
			select {
			case <-time.After(400 * time.Millisecond):
			case <-ctx.Done():
			}
			return nil, nil
		})); err != nil {
			t.Fatal(err)
		}
	})
	return srv.ClientURL()
}

func TestQuery(t *testing.T) {
	url := startInventory(t)
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		code       int
		stdout     string
		stderrHave []string
	}{
		{"reply", []string{"inventory", "stock.get", `"sku-1"`}, "", 0, "42\n", nil},
		{"request on stdin", []string{"inventory", "stock.get"}, "\"sku-1\"\n", 0, "42\n", nil},
		{"remote error", []string{"inventory", "stock.get", `"sku-9"`}, "", exitRemote, "",
			[]string{"inventory.stock.get failed: [not_found] ", "no such sku \"sku-9\""}},
		{"undecodable request", []string{"inventory", "stock.get", `{"sku":1}`}, "", exitRemote, "", []string{"[decode]"}},
		{"no responders", []string{"inventory", "stock.put", `1`, "--timeout", "300ms"}, "", exitNoResponders, "",
			[]string{"no responders: nobody handled inventory.stock.put within 300ms"}},
		{"unknown service", []string{"billing", "stock.get", `1`, "--timeout", "300ms"}, "", exitNoResponders, "", []string{"no responders"}},
		{"timeout", []string{"inventory", "stock.slow", `{}`, "--timeout", "150ms"}, "", exitTimeout, "",
			[]string{"timeout: no reply from inventory.stock.slow within 150ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := execute(t, tc.stdin, append([]string{"query", "--url", url}, tc.args...)...)
			if r.code != tc.code || r.stdout != tc.stdout {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout)
			}
			for _, s := range tc.stderrHave {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q lacks %q", r.stderr, s)
				}
			}
		})
	}
}
