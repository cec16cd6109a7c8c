//go:build !unix

package natsbus

import "os"

// lockDataDir only makes dir where the kernel offers no advisory lock: there
// a second server on the same directory is not detected.
func lockDataDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &DataDirError{Dir: dir, Err: err}
	}
	return func() {}, nil
}
