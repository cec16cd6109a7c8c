package sqlstore_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

func TestParseURL(t *testing.T) {
	pg, dsn, o, err := sqlstore.ParseURL("postgres://app:pw@db:5432/orders?sslmode=disable&table_prefix=o_&max_conns=4")
	if err != nil || !pg || dsn != "postgres://app:pw@db:5432/orders?sslmode=disable" || o.TablePrefix != "o_" || o.MaxConns != 4 {
		t.Fatalf("postgres: %v %q %+v %v", pg, dsn, o, err)
	}
	for raw, want := range map[string]string{"sqlite:data/saga.db": "data/saga.db", "sqlite:///var/saga.db?table_prefix=x_": "/var/saga.db"} {
		pg, dsn, _, err := sqlstore.ParseURL(raw)
		if err != nil || pg || dsn != filepath.FromSlash(want) {
			t.Errorf("%q: %v %q %v", raw, pg, dsn, err)
		}
	}
	for raw, want := range map[string]string{
		"sqlite:x.db?max_conns=2": "unknown parameter",
		"sqlite://host/x.db":      "names no host",
		"sqlite:":                 "no database file",
		"postgres://u:Sentinel-sql-1@/db?max_conns=x": `parameter "max_conns"`,
	} {
		err := saga.CheckStoreURL(raw)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "Sentinel-sql-1") {
			t.Errorf("%q: %v, want %q", raw, err, want)
		}
	}
}

func TestOpenStoreByURL(t *testing.T) {
	ctx := context.Background()
	s, err := saga.OpenStore(ctx, "sqlite:"+filepath.ToSlash(filepath.Join(t.TempDir(), "saga.db")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "none"); !errors.Is(err, saga.ErrNotFound) {
		t.Errorf("Load: %v", err)
	}
	if err := s.(io.Closer).Close(); err != nil {
		t.Error(err)
	}
	if _, err := saga.OpenStore(ctx, "mysql://db"); !errors.Is(err, driver.ErrUnknownScheme) {
		t.Errorf("mysql: %v", err)
	}
}
