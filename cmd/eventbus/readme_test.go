package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var shBlock = regexp.MustCompile("(?s)```sh\n(.*?)```")

// The README's shell blocks work as written, in a fresh clone, one after
// the other as a newcomer runs them; the CLI block runs a second time with
// everything built and the server's data kept, where starting clients
// before the server is up used to fail. The block that runs the whole
// suite (scripts/test.sh) is the one thing left out: this test is part of
// it.
func TestREADMEShellBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the README's programs")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(t.TempDir(), "eventbus")
	if out, err := exec.Command("git", "clone", "--quiet", "--local", root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	// The README under test is the working tree's, committed or not.
	if err := os.WriteFile(filepath.Join(clone, "README.md"), readme, 0o644); err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range shBlock.FindAllStringSubmatch(string(readme), -1) {
		if !strings.Contains(m[1], "scripts/test.sh") {
			blocks = append(blocks, m[1])
		}
	}
	cli := -1
	for i, b := range blocks {
		if strings.Contains(b, "eventbus server") {
			cli = i
		}
	}
	if len(blocks) < 3 || cli < 0 {
		t.Fatalf("found %d shell blocks, CLI block %d: has the README changed shape?", len(blocks), cli)
	}
	for i, b := range append(blocks, blocks[cli]) {
		out, err := runBlock(t, clone, b)
		if err != nil {
			t.Fatalf("block %d:\n%s\nfailed: %v\noutput:\n%s", i+1, b, err, out)
		}
		if i >= len(blocks)-1 && strings.Contains(b, "eventbus server") {
			for _, want := range []string{`"order_id":"o-1"`, `{"sku":"s-1","available":7}`} {
				if !strings.Contains(out, want) {
					t.Errorf("CLI block (run %d) printed no %s:\n%s", i+1, want, out)
				}
			}
		}
	}
}

// runBlock runs a shell block with bash -e in dir, and ends whatever it
// left running.
func runBlock(t *testing.T, dir, block string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", block)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NATS_URL=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
		// Background jobs of a failed block are still running.
		if kerr := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); kerr == nil && err == nil {
			err = errors.New("the block left processes running")
		}
	}
	return out.String(), err
}

// benchFigure is a figure the README quotes: a decimal, a rate in thousands
// or a date.
var benchFigure = regexp.MustCompile(`\d{4}-\d{2}-\d{2}|\d+(?:\.\d+)?k\b|\d+\.\d+`)

// The README's performance section quotes bench/RESULTS.md, the one source
// of the figures: each figure it gives is there as written, so that an
// updated result cannot leave a stale figure behind in the README.
func TestREADMEQuotesBenchResults(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	results, err := os.ReadFile("../../bench/RESULTS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, perf, ok := strings.Cut(string(readme), "\n## Performance\n")
	if !ok {
		t.Fatal("the README has no Performance section")
	}
	perf, _, _ = strings.Cut(perf, "\n## ")
	figures := benchFigure.FindAllString(perf, -1)
	if len(figures) < 5 {
		t.Fatalf("the Performance section quotes %d figures: has it changed shape?", len(figures))
	}
	for _, f := range figures {
		if !strings.Contains(string(results), f) {
			t.Errorf("the README quotes %s, which bench/RESULTS.md does not have: quote the current figure", f)
		}
	}
}
