package driver_test

import (
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

func TestURLQuerySkipsZeroValues(t *testing.T) {
	var q driver.URLQuery
	q.String("s", "")
	q.Strings("ss", nil)
	q.Bool("b", false)
	q.BoolPtr("bp", nil)
	q.Int("i", 0)
	q.Int32("i32", 0)
	q.Int64("i64", 0)
	q.Duration("d", 0)
	if got := q.Encode(); got != "" {
		t.Errorf("zero values wrote %q", got)
	}
	q.Set("empty", "")
	if got := q.Encode(); got != "empty=" {
		t.Errorf("Set of an empty value wrote %q, want empty=", got)
	}
}

// What URLQuery writes, Params reads back as it was.
func TestURLQueryRoundTripsThroughParams(t *testing.T) {
	type values struct {
		S   string
		SS  []string
		B   bool
		BP  *bool
		BF  *bool
		I   int
		I32 int32
		I64 int64
		D   time.Duration
	}
	on, off := true, false
	want := values{S: "a b&c=d", SS: []string{"h1:1", "h2:2"}, B: true, BP: &on, BF: &off, I: -3, I32: 1 << 30, I64: 1 << 40, D: 90 * time.Second}

	var q driver.URLQuery
	q.String("s", want.S)
	q.Strings("ss", want.SS)
	q.Bool("b", want.B)
	q.BoolPtr("bp", want.BP)
	q.BoolPtr("bf", want.BF)
	q.Int("i", want.I)
	q.Int32("i32", want.I32)
	q.Int64("i64", want.I64)
	q.Duration("d", want.D)
	raw := q.Encode()
	if exp := "b=true&bf=false&bp=true&d=1m30s&i=-3&i32=1073741824&i64=1099511627776&s=a+b%26c%3Dd&ss=h1%3A1%2Ch2%3A2"; raw != exp {
		t.Errorf("Encode() = %s\n         want %s", raw, exp)
	}

	var got values
	p := driver.NewParams(&url.URL{Scheme: "x", Host: "h", RawQuery: raw})
	p.String("s", &got.S)
	p.Strings("ss", &got.SS)
	p.Bool("b", &got.B)
	p.BoolPtr("bp", &got.BP)
	p.BoolPtr("bf", &got.BF)
	p.Int("i", &got.I)
	p.Int32("i32", &got.I32)
	p.Int64("i64", &got.I64)
	p.Duration("d", &got.D)
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back %+v, want %+v", got, want)
	}
}
