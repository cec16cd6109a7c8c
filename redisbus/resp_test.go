package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
)

// TestParseXRead: the entries of hand-written XREADGROUP replies in RESP2
// and RESP3, nulls, an entry deleted since it was added, and replies cut
// short or of another shape.
func TestParseXRead(t *testing.T) {
	entries := "*2\r\n" +
		"*2\r\n$3\r\n1-0\r\n*8\r\n$14\r\nce_specversion\r\n$3\r\n1.0\r\n$5\r\nce_id\r\n$1\r\na\r\n$5\r\nhdr:X\r\n$2\r\nxy\r\n$4\r\ndata\r\n$4\r\nab\r\n\r\n" +
		"*2\r\n$3\r\n2-0\r\n*-1\r\n"
	want := []entry{{id: "1-0", fields: []string{"ce_specversion", "1.0", "ce_id", "a", "hdr:X", "xy"}, data: []byte("ab\r\n"), hasData: true}}
	for name, raw := range map[string]string{
		"RESP2": "*1\r\n*2\r\n$4\r\nkey1\r\n" + entries,
		"RESP3": "%1\r\n$4\r\nkey1\r\n" + entries,
	} {
		got, err := parseXRead([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
		for i := range len(raw) - 1 {
			if _, err := parseXRead([]byte(raw[:i])); err == nil && i > 0 {
				t.Errorf("%s cut after %d bytes: no error", name, i)
			}
		}
	}
	for _, raw := range []string{"*-1\r\n", "_\r\n", "*0\r\n", "%0\r\n"} {
		if got, err := parseXRead([]byte(raw)); err != nil || got != nil {
			t.Errorf("%q: got %v, %v; want nothing", raw, got, err)
		}
	}
	for _, raw := range []string{"+OK\r\n", ":1\r\n", "*1\r\n$1\r\nx\r\n", "*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*3\r\n"} {
		if _, err := parseXRead([]byte(raw)); err == nil {
			t.Errorf("%q: no error", raw)
		}
	}
	for _, raw := range []string{"-NOGROUP no such key\r\n", "!5\r\nERR x\r\n"} {
		if !isErrorReply([]byte(raw)) {
			t.Errorf("%q is not an error reply", raw)
		}
	}
}

// TestParseXReadServer: parseXRead reads what the server sends in RESP2
// and RESP3 as go-redis's own XREADGROUP reads it.
func TestParseXReadServer(t *testing.T) {
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	key := "redisbus-test-" + hex.EncodeToString(b[:]) + ":{resp}"
	for _, proto := range []int{2, 3} {
		o := *opts
		o.Protocol = proto
		rdb := redis.NewClient(&o)
		defer rdb.Close()
		defer rdb.Del(context.WithoutCancel(ctx), key)
		if proto == 2 {
			for i := range 3 {
				if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
					"ce_specversion", "1.0", "ce_id", strings.Repeat("x", i), "odd name", "é\r\n", "data", []byte{0, 1, byte(i)},
				}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"only", "fields"}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range []string{"typed", "raw"} {
			if err := rdb.XGroupCreate(ctx, key, g+"-"+string(rune('0'+proto)), "0").Err(); err != nil {
				t.Fatal(err)
			}
		}
		typed, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "typed-" + string(rune('0'+proto)), Consumer: "c",
			Streams: []string{key, ">"}, Count: 10}).Result()
		if err != nil {
			t.Fatal(err)
		}
		cmd := redis.NewRawCmd(ctx, "xreadgroup", "group", "raw-"+string(rune('0'+proto)), "c", "count", 10, "streams", key, ">")
		if err := rdb.Process(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		got, err := parseXRead(cmd.Val())
		if err != nil {
			t.Fatalf("RESP%d: %v\n%q", proto, err, cmd.Val())
		}
		msgs := typed[0].Messages
		if len(got) != len(msgs) || len(got) != 4 {
			t.Fatalf("RESP%d: %d entries, go-redis read %d; want 4", proto, len(got), len(msgs))
		}
		for i, e := range got {
			values := make(map[string]any)
			for j := 0; j < len(e.fields); j += 2 {
				values[e.fields[j]] = e.fields[j+1]
			}
			if e.hasData {
				values[fieldData] = string(e.data)
			}
			if e.id != msgs[i].ID || !reflect.DeepEqual(values, msgs[i].Values) {
				t.Errorf("RESP%d entry %d: got %s %v, go-redis read %s %v", proto, i, e.id, values, msgs[i].ID, msgs[i].Values)
			}
		}
	}
}

// BenchmarkReadEntries: the client's CPU time per entry read by
// XREADGROUP and decoded, through go-redis's generic reply (Do) and through
// the raw reply (RawWriteToCmd) parsed by parseXRead, 256 entries of the fields a bus event
// has per read (the consumer's pending entries, read again and again).
func BenchmarkReadEntries(b *testing.B) {
	opts, err := redis.ParseURL(testenv.RedisURL(b))
	if err != nil {
		b.Fatal(err)
	}
	opts.Protocol = 2
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	key := "redisbus-test-" + hex.EncodeToString(rb[:]) + ":{bench}"
	defer rdb.Del(ctx, key)
	data := strings.Repeat("x", 256)
	for i := range 256 {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"ce_specversion", "1.0", "ce_id", hex.EncodeToString([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7}),
			"ce_source", "bench", "ce_type", "bench.event", "ce_time", time.Now().UTC().Format(time.RFC3339Nano), "data", data}}).Err(); err != nil {
			b.Fatal(err)
		}
	}
	if err := rdb.XGroupCreate(ctx, key, "g", "0").Err(); err != nil {
		b.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{key, ">"}, Count: 256}).Err(); err != nil {
		b.Fatal(err)
	}
	s := &streamSub{}
	args := []any{"xreadgroup", "group", "g", "c", "count", 256, "streams", key, "0"}
	for _, v := range []struct {
		name string
		read func() []entry
	}{
		{"goredis", func() []entry {
			res, err := rdb.Do(ctx, args...).Result()
			if err != nil {
				b.Fatal(err)
			}
			return parseEntries(res.([]any)[0].([]any)[1])
		}},
		{"raw", func() []entry {
			reply := getReply()
			defer putReply(reply)
			if err := rdb.Process(ctx, redis.NewRawWriteToCmd(ctx, reply, args...)); err != nil {
				b.Fatal(err)
			}
			es, err := parseXRead(reply.b)
			if err != nil {
				b.Fatal(err)
			}
			return es
		}},
	} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			start := cpuTime()
			n := 0
			for b.Loop() {
				ds := s.deliveries(v.read(), nil, 1)
				if len(ds) != 256 || ds[0].Err != nil {
					b.Fatalf("%d deliveries, %v", len(ds), ds[0].Err)
				}
				n += len(ds)
			}
			b.ReportMetric(float64(cpuTime()-start)/float64(time.Microsecond)/float64(n), "cpu-µs/entry")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// FuzzParseXRead: any reply parses without panic, into entries whose
// fields come in pairs.
func FuzzParseXRead(f *testing.F) {
	f.Add([]byte("*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$5\r\nce_id\r\n$1\r\na\r\n$4\r\ndata\r\n$2\r\nab\r\n"))
	f.Add([]byte("%1\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-0\r\n_\r\n"))
	f.Add([]byte("*1\r\n*2\r\n$1\r\nk\r\n*999999999\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		es, err := parseXRead(raw)
		for _, e := range es {
			if err != nil || len(e.fields)%2 != 0 {
				t.Fatalf("entries %v with error %v", es, err)
			}
		}
	})
}

// A reply's length fields cannot make the parser allocate more than the
// reply holds: a count of 99,999,999 entries in a 70-byte reply, and one
// entry of 4,000 fields announced as the first of 7,900 (the field slab
// was sized fields × entries announced).
func TestParseXReadAllocatesByTheReply(t *testing.T) {
	huge := "*1\r\n*2\r\n$1\r\nk\r\n*99999999\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
	var b strings.Builder
	b.WriteString("*1\r\n*2\r\n$1\r\nk\r\n*7900\r\n*2\r\n$3\r\n1-0\r\n*4000\r\n")
	for range 4000 {
		b.WriteString("$0\r\n\r\n")
	}
	for name, raw := range map[string]string{"count": huge, "fields × entries": b.String()} {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		_, err := parseXRead([]byte(raw))
		runtime.ReadMemStats(&m1)
		if grew := m1.TotalAlloc - m0.TotalAlloc; grew > uint64(100*len(raw)+1<<16) {
			t.Errorf("%s: a %d-byte reply (error %v) allocated %d bytes", name, len(raw), err, grew)
		}
	}
}

// An entry with two data fields (XADD k * ... data first data last) has the
// last as its Data whether XREADGROUP read it (parseXRead) or a reclaim
// did (go-redis's reply, parseEntries), and no data among its fields.
func TestRepeatedDataFieldIsTheLast(t *testing.T) {
	raw := "*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*12\r\n$14\r\nce_specversion\r\n$3\r\n1.0\r\n$5\r\nce_id\r\n$1\r\na\r\n$9\r\nce_source\r\n$1\r\ns\r\n$7\r\nce_type\r\n$1\r\nt\r\n$4\r\ndata\r\n$5\r\nfirst\r\n$4\r\ndata\r\n$4\r\nlast\r\n"
	es, err := parseXRead([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	first, err := decodeInto(&driver.Message{}, es[0])
	if err != nil {
		t.Fatal(err)
	}
	reclaimed, err := decodeInto(&driver.Message{}, parseEntries([]any{[]any{"1-0", []any{"ce_specversion", "1.0", "ce_id", "a", "ce_source", "s", "ce_type", "t", "data", "first", "data", "last"}}})[0])
	if err != nil {
		t.Fatal(err)
	}
	if string(first.Data) != "last" || string(reclaimed.Data) != "last" {
		t.Fatalf("Data %q read, %q reclaimed; want \"last\" both", first.Data, reclaimed.Data)
	}
}
