package sqlstore

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/saga"
)

// Importing sqlstore registers the store URL schemes postgres://,
// postgresql:// and sqlite: with package saga (see saga.OpenStore).
func init() {
	saga.RegisterStoreScheme("postgres", opener{})
	saga.RegisterStoreScheme("postgresql", opener{})
	saga.RegisterStoreScheme("sqlite", opener{})
}

// ParseURL splits a store URL into what OpenPostgres or OpenSQLite take:
//
//   - postgres://user:password@host:5432/db?sslmode=disable&table_prefix=saga_&max_conns=32:
//     table_prefix and max_conns are Options; every other parameter is the
//     PostgreSQL driver's (pgx), passed on in dsn.
//   - sqlite:relative/saga.db or sqlite:///absolute/saga.db, with
//     table_prefix as the only parameter; dsn is the file's path.
//
// An unknown parameter of a sqlite URL is an error. Errors never contain the
// password.
func ParseURL(rawURL string) (postgres bool, dsn string, opts *Options, err error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return false, "", nil, err
	}
	return parseURL(u)
}

func parseURL(u *url.URL) (bool, string, *Options, error) {
	o := &Options{}
	switch u.Scheme {
	case "postgres", "postgresql":
		q := u.Query()
		p := driver.NewParams(&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawQuery: onlyOurs(q).Encode()})
		p.String("table_prefix", &o.TablePrefix)
		p.Int("max_conns", &o.MaxConns)
		if err := p.Err(); err != nil {
			return false, "", nil, err
		}
		q.Del("table_prefix")
		q.Del("max_conns")
		dsn := *u
		dsn.RawQuery = q.Encode()
		return true, dsn.String(), o, nil
	case "sqlite":
		p := driver.NewParams(u)
		p.String("table_prefix", &o.TablePrefix)
		path := u.Path
		if u.Opaque != "" {
			var err error
			if path, err = url.PathUnescape(u.Opaque); err != nil {
				p.Fail("", errors.New("sqlstore: malformed path"))
			}
		}
		if u.Host != "" || u.User != nil {
			p.Fail("", errors.New("sqlstore: a sqlite URL names no host: write sqlite:relative/file.db or sqlite:///absolute/file.db"))
		} else if path == "" {
			p.Fail("", errors.New("sqlstore: no database file"))
		}
		if err := p.Err(); err != nil {
			return false, "", nil, err
		}
		return false, filepath.FromSlash(path), o, nil
	}
	return false, "", nil, &driver.URLError{URL: driver.RedactURL(u.String()), Err: errors.New("sqlstore: scheme must be postgres, postgresql or sqlite")}
}

// onlyOurs keeps the parameters that sqlstore reads, for error reporting.
func onlyOurs(q url.Values) url.Values {
	out := url.Values{}
	for _, k := range []string{"table_prefix", "max_conns"} {
		if v, ok := q[k]; ok {
			out[k] = v
		}
	}
	return out
}

type opener struct{}

func (opener) CheckURL(u *url.URL) error {
	_, _, _, err := parseURL(u)
	return err
}

func (opener) OpenStoreURL(ctx context.Context, u *url.URL) (saga.Store, error) {
	postgres, dsn, o, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	if postgres {
		return OpenPostgres(ctx, dsn, o)
	}
	return OpenSQLite(ctx, dsn, o)
}
