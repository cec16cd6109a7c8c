package rabbitbus

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// writeLog is a net.Conn that records each Write it receives.
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	err    error
	closed bool
	gate   chan struct{} // if set, the first Write waits for it to close
}

func (w *writeLog) Write(p []byte) (int, error) {
	if g := w.gate; g != nil {
		w.gate = nil // only the writer goroutine writes
		<-g
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func (w *writeLog) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return nil
}

func (w *writeLog) SetWriteDeadline(time.Time) error { return nil }

func (w *writeLog) joined() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Join(w.writes, nil)
}

func (w *writeLog) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes)
}

// Uncorked writes are written behind, at once; corked ones leave together,
// in order, when the last cork goes, or as soon as corkLimit bytes wait.
func TestCorkConn(t *testing.T) {
	w := &writeLog{}
	c := newCorkConn(w)
	defer c.Close()
	mustWrite := func(s string) {
		t.Helper()
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	flushed := func() {
		t.Helper()
		if err := c.flushed(); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite("a")
	flushed()
	if w.count() != 1 {
		t.Fatalf("an uncorked write was not written: %q", w.writes)
	}
	c.cork()
	mustWrite("b")
	c.cork() // a second publisher
	mustWrite("c")
	c.uncork()
	flushed()
	if w.count() != 1 {
		t.Fatalf("wrote %d times before the last uncork, want only the uncorked write", w.count())
	}
	mustWrite("d")
	c.uncork()
	flushed()
	if w.count() != 2 || string(w.writes[1]) != "bcd" {
		t.Fatalf("writes %q, want [a bcd]", w.writes)
	}
	c.cork()
	c.uncork() // an uncork with nothing gathered writes nothing
	flushed()
	if w.count() != 2 {
		t.Fatalf("writes %q, want [a bcd]", w.writes)
	}
	c.cork()
	big := bytes.Repeat([]byte("x"), corkLimit)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	flushed()
	if w.count() != 3 {
		t.Fatalf("%d bytes waited while corked; want them written at the limit", corkLimit)
	}
	mustWrite("e")
	c.uncork()
	flushed()
	if got, want := w.joined(), append(append([]byte("abcd"), big...), 'e'); !bytes.Equal(got, want) {
		t.Fatalf("the bytes written differ from those given (%d vs %d bytes)", len(got), len(want))
	}
}

// Writes made while the socket is busy leave together, in order, in the
// next system call.
func TestCorkConnCombines(t *testing.T) {
	gate := make(chan struct{})
	w := &writeLog{gate: gate}
	c := newCorkConn(w)
	defer c.Close()
	for _, s := range []string{"a", "b", "c", "d"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := c.flushed(); err != nil {
		t.Fatal(err)
	}
	if got := string(w.joined()); got != "abcd" {
		t.Fatalf("wrote %q, want abcd", got)
	}
	if n := w.count(); n > 2 {
		t.Fatalf("%d writes for 4 made while the first waited, want at most 2", n)
	}
}

// A write that fails closes the connection and fails every later write.
func TestCorkConnWriteFails(t *testing.T) {
	broken := errors.New("connection reset")
	w := &writeLog{err: broken}
	c := newCorkConn(w)
	c.cork()
	if _, err := c.Write([]byte("gathered")); err != nil {
		t.Fatalf("a corked write failed before the flush: %v", err)
	}
	c.uncork()
	if err := c.flushed(); !errors.Is(err, broken) {
		t.Fatalf("flushed: %v, want %v", err, broken)
	}
	if !w.closed {
		t.Fatal("the connection stays open after a failed flush")
	}
	if _, err := c.Write([]byte("later")); !errors.Is(err, broken) {
		t.Fatalf("a write after the failed flush: %v, want %v", err, broken)
	}
}
