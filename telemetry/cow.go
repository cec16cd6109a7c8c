package telemetry

import (
	"sync"
	"sync/atomic"
)

// cowMap is a map read without a lock and added to by copying it: for
// caches that are read on every message and written a few times. Callers
// serialize additions.
type cowMap[K comparable, V any] struct {
	p atomic.Pointer[map[K]V]
}

// get returns the value of k.
func (c *cowMap[K, V]) get(k K) (V, bool) {
	if m := c.p.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// all returns the map as it is; it must not be modified.
func (c *cowMap[K, V]) all() map[K]V {
	if m := c.p.Load(); m != nil {
		return *m
	}
	return nil
}

// add sets k to v in a copy of the map, which replaces it. The caller
// serializes calls.
func (c *cowMap[K, V]) add(k K, v V) {
	old := c.all()
	m := make(map[K]V, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[k] = v
	c.p.Store(&m)
}

// load returns the value of k, or else the one mk makes, under mu, and
// adds it to the map if mk says to keep it.
func (c *cowMap[K, V]) load(mu *sync.Mutex, k K, mk func() (v V, keep bool)) V {
	if v, ok := c.get(k); ok {
		return v
	}
	mu.Lock()
	defer mu.Unlock()
	if v, ok := c.get(k); ok {
		return v
	}
	v, keep := mk()
	if keep {
		c.add(k, v)
	}
	return v
}
