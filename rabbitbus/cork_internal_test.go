package rabbitbus

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
)

// writeLog is a net.Conn that records each Write it receives.
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	err    error
	closed bool
}

func (w *writeLog) Write(p []byte) (int, error) {
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

func (w *writeLog) joined() []byte { return bytes.Join(w.writes, nil) }

// Uncorked writes go through one by one; corked ones leave together, in
// order, when the last cork goes, or as soon as corkLimit bytes wait.
func TestCorkConn(t *testing.T) {
	w := &writeLog{}
	c := newCorkConn(w)
	mustWrite := func(s string) {
		t.Helper()
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	mustWrite("a")
	c.cork()
	mustWrite("b")
	c.cork() // a second publisher
	mustWrite("c")
	c.uncork()
	if len(w.writes) != 1 {
		t.Fatalf("wrote %d times before the last uncork, want only the uncorked write", len(w.writes))
	}
	mustWrite("d")
	c.uncork()
	if len(w.writes) != 2 || string(w.writes[1]) != "bcd" {
		t.Fatalf("writes %q, want [a bcd]", w.writes)
	}
	c.uncork() // an uncork with nothing gathered writes nothing
	c.cork()
	big := bytes.Repeat([]byte("x"), corkLimit)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	if len(w.writes) != 3 {
		t.Fatalf("%d bytes waited while corked; want them written at the limit", corkLimit)
	}
	mustWrite("e")
	c.uncork()
	if got, want := w.joined(), append(append([]byte("abcd"), big...), 'e'); !bytes.Equal(got, want) {
		t.Fatalf("the bytes written differ from those given (%d vs %d bytes)", len(got), len(want))
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
	if !w.closed {
		t.Fatal("the connection stays open after a failed flush")
	}
	if _, err := c.Write([]byte("later")); !errors.Is(err, broken) {
		t.Fatalf("a write after the failed flush: %v, want %v", err, broken)
	}
}
