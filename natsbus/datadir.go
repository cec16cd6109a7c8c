package natsbus

import (
	"errors"
	"strconv"
)

// dataDirLock is the file in a data directory that the server using it holds
// locked.
const dataDirLock = "eventbus.lock"

// ErrDataDirInUse: another embedded server (in this process or another) is
// using the data directory.
var ErrDataDirInUse = errors.New("data directory in use")

// DataDirError reports a data directory the embedded server cannot use:
// one it cannot create or write, or one another server holds (Err matches
// ErrDataDirInUse, and PID is the holder's when it is known).
type DataDirError struct {
	Dir string
	PID int
	Err error
}

func (e *DataDirError) Error() string {
	if errors.Is(e.Err, ErrDataDirInUse) {
		holder := "another server"
		if e.PID > 0 {
			holder += " (pid " + strconv.Itoa(e.PID) + ")"
		}
		return "natsbus: data directory " + e.Dir + " is in use by " + holder
	}
	return "natsbus: cannot use " + e.Dir + " as the data directory: " + e.Err.Error()
}

func (e *DataDirError) Unwrap() error { return e.Err }
