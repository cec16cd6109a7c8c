package saga

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/marty-msf/eventbus/driver"
)

// Opening stores by URL
//
// A store package registers its URL schemes when it is imported, as driver
// packages do for brokers, and OpenStore opens a store from a URL:
//
//	import _ "github.com/marty-msf/eventbus/saga/sqlstore" // postgres://, sqlite:
//
//	store, err := saga.OpenStore(ctx, "postgres://app@db:5432/orders")

// StoreOpener opens a Store from a URL of the scheme it was registered for.
// It may also implement driver.URLChecker, to validate a URL without I/O.
type StoreOpener interface {
	OpenStoreURL(ctx context.Context, u *url.URL) (Store, error)
}

var (
	storeSchemesMu sync.RWMutex
	storeSchemes   = map[string]StoreOpener{}
)

// knownStoreSchemes names the package to import for a scheme nobody
// registered.
var knownStoreSchemes = map[string]string{
	"postgres":   "github.com/marty-msf/eventbus/saga/sqlstore",
	"postgresql": "github.com/marty-msf/eventbus/saga/sqlstore",
	"sqlite":     "github.com/marty-msf/eventbus/saga/sqlstore",
}

// RegisterStoreScheme makes o open store URLs of scheme. Store packages call
// it from init; like database/sql.Register it panics on a scheme registered
// twice or a nil opener, programming errors of the store package.
func RegisterStoreScheme(scheme string, o StoreOpener) {
	scheme = strings.ToLower(scheme)
	if scheme == "" || o == nil {
		panic(fmt.Sprintf("saga: RegisterStoreScheme %q: empty scheme or nil opener", scheme))
	}
	storeSchemesMu.Lock()
	defer storeSchemesMu.Unlock()
	if _, dup := storeSchemes[scheme]; dup {
		panic(fmt.Sprintf("saga: RegisterStoreScheme: scheme %q registered twice", scheme))
	}
	storeSchemes[scheme] = o
}

// StoreSchemes lists the registered store schemes, sorted.
func StoreSchemes() []string {
	storeSchemesMu.RLock()
	defer storeSchemesMu.RUnlock()
	out := make([]string, 0, len(storeSchemes))
	for s := range storeSchemes {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func parseStoreURL(rawURL string) (*url.URL, StoreOpener, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, nil, err
	}
	if u.Scheme == "" {
		return nil, nil, &driver.URLError{URL: driver.RedactURL(rawURL), Err: errors.New("no scheme (want postgres:// or sqlite:)")}
	}
	u.Scheme = strings.ToLower(u.Scheme)
	storeSchemesMu.RLock()
	o := storeSchemes[u.Scheme]
	storeSchemesMu.RUnlock()
	if o == nil {
		return nil, nil, &driver.URLError{URL: driver.RedactURL(rawURL), Err: &driver.UnknownSchemeError{Scheme: u.Scheme, Package: knownStoreSchemes[u.Scheme], Registered: StoreSchemes()}}
	}
	return u, o, nil
}

// CheckStoreURL reports every problem of a store URL that can be found
// without I/O. Errors never contain the URL's credentials.
func CheckStoreURL(rawURL string) error {
	u, o, err := parseStoreURL(rawURL)
	if err != nil {
		return err
	}
	if c, ok := o.(driver.URLChecker); ok {
		return driver.RedactError(c.CheckURL(u), driver.URLSecrets(rawURL)...)
	}
	return nil
}

// OpenStore opens the store that rawURL names, with the opener registered
// for its scheme. A store that holds resources implements io.Closer. Errors
// never contain the URL's credentials.
func OpenStore(ctx context.Context, rawURL string) (Store, error) {
	u, o, err := parseStoreURL(rawURL)
	if err != nil {
		return nil, err
	}
	s, err := o.OpenStoreURL(ctx, u)
	if err != nil {
		return nil, driver.RedactError(err, driver.URLSecrets(rawURL)...)
	}
	return s, nil
}
