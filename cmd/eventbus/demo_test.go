package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	r := execute(t, "", "demo", "--orders", "6", "--failure-rate", "0.5", "--data", dir)
	if r.code != exitOK {
		t.Fatalf("exit %d; stdout %q; stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"6 orders through the order saga",
		"3 declined at the payment",
		"summary: 6 orders in ",
		": 3 completed, 3 compensated, 0 failed\n",
		"every compensated order left stock and money as they were",
		"eventbus saga list --store sqlite:" + filepath.ToSlash(filepath.Join(dir, "saga.db")),
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	// Live progress: each order's steps.
	for i := 1; i <= 6; i++ {
		var got []string
		for _, l := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(l); len(f) > 2 && strings.HasSuffix(f[1], fmt.Sprintf("-%04d", i)) {
				got = append(got, strings.Join(f[2:], " "))
			}
		}
		end := "COMPLETED"
		if declined(i-1, 0.5) {
			end = "COMPENSATED"
		}
		for _, want := range []string{"started", "✓ reserve-inventory", end} {
			if !slices.Contains(got, want) {
				t.Errorf("order %d: progress %q lacks %q", i, got, want)
			}
		}
	}
	// The sagas stay in the store of --data, for the saga commands.
	r = execute(t, "", "saga", "list", "--store", "sqlite:"+filepath.Join(dir, "saga.db"))
	if r.code != exitOK || strings.Count(r.stdout, "completed") != 3 || strings.Count(r.stdout, "compensated") != 3 {
		t.Errorf("saga list: exit %d; stdout %q; stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestDemoFlags(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--orders", "0"},
		{"demo", "--failure-rate", "1.5"},
		{"demo", "extra"},
	} {
		r := execute(t, "", args...)
		if r.code != exitUsage || strings.Count(r.stderr, "error:") != 1 {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}
