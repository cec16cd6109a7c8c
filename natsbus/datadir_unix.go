//go:build unix

package natsbus

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockDataDir makes dir this process's own until release: a second server on
// the same directory would keep its own view of the streams and overwrite
// the first one's files. The lock is the kernel's (flock on
// DIR/eventbus.lock, which holds the owner's pid), so it goes with the
// process, however the process ends.
func lockDataDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &DataDirError{Dir: dir, Err: err}
	}
	f, err := os.OpenFile(filepath.Join(dir, dataDirLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, &DataDirError{Dir: dir, Err: err}
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(holder)))
			return nil, &DataDirError{Dir: dir, Err: ErrDataDirInUse, PID: pid}
		}
		return nil, &DataDirError{Dir: dir, Err: fmt.Errorf("lock: %w", err)}
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
