//go:build !unix

package main

import (
	"fmt"
	"os"
)

// lockDataDir only checks that dir can be made where the kernel offers no
// advisory lock the tool relies on.
func lockDataDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot use %s as the data directory: %w; give --data a directory you can write", dir, err)
	}
	return func() {}, nil
}
