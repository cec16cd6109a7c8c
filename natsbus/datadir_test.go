package natsbus_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/natsbus"
)

// A data directory serves one embedded server at a time, in this process or
// another, and is free again after Shutdown.
func TestDataDirectoryServesOneServer(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxFor(t, 30*time.Second)
	first, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: dir, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: dir, Port: -1})
	var de *natsbus.DataDirError
	if !errors.Is(err, natsbus.ErrDataDirInUse) || !errors.As(err, &de) || de.PID != os.Getpid() || time.Since(began) > 5*time.Second {
		t.Fatalf("second server on a held directory: %v after %v", err, time.Since(began))
	}
	if err := first.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: dir, Port: -1})
	if err != nil {
		t.Fatalf("after shutdown: %v", err)
	}
	if err := again.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A directory that cannot be made is a DataDirError too, at once.
	file := dir + "/not-a-dir"
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: file + "/sub", Port: -1})
	if !errors.As(err, &de) || errors.Is(err, natsbus.ErrDataDirInUse) {
		t.Fatalf("unusable directory: %v", err)
	}
}
