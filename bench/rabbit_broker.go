package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// withBrokerCPU wraps a RabbitMQ scenario: the broker runs on the same
// machine, so its CPU time per message (what the wire format costs the
// broker) is read from /proc for the broker's process between the first
// message and the last one handled, and added to the row's note. Where the
// process cannot be found (another host, no /proc), the row has no such note.
func withBrokerCPU(run func(context.Context, Config) (Result, error)) func(context.Context, Config) (Result, error) {
	return func(ctx context.Context, cfg Config) (Result, error) {
		pid := brokerPID()
		if pid == 0 {
			return run(ctx, cfg)
		}
		var start, stop time.Duration
		onStart, onStop := cfg.OnStart, cfg.OnStop
		cfg.OnStart = func() {
			start = procCPU(pid)
			if onStart != nil {
				onStart()
			}
		}
		cfg.OnStop = func() {
			if onStop != nil {
				onStop()
			}
			stop = procCPU(pid)
		}
		res, err := run(ctx, cfg)
		if err == nil && res.Handled > 0 && stop > start {
			res.Note = joinNotes(res.Note, fmt.Sprintf("broker CPU %.1f µs/msg", float64(stop-start)/float64(time.Microsecond)/float64(res.Handled)))
		}
		return res, err
	}
}

// brokerPID finds the local RabbitMQ node serving rabbitURL(): a beam.smp
// process whose RABBITMQ_NODE_PORT, if set, is the URL's port (the brokers
// the fault tests start set it; the shared one listens on 5672 by default).
// BENCH_BROKER_PID overrides the search.
func brokerPID() int {
	if s := os.Getenv("BENCH_BROKER_PID"); s != "" {
		n, _ := strconv.Atoi(s)
		return n
	}
	port := "5672"
	if u, err := url.Parse(rabbitURL()); err == nil && u.Port() != "" {
		port = u.Port()
	}
	if h, err := url.Parse(rabbitURL()); err != nil || (h.Hostname() != "127.0.0.1" && h.Hostname() != "localhost") {
		return 0
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "beam.smp" {
			continue
		}
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			continue
		}
		nodePort := "5672"
		for _, kv := range bytes.Split(env, []byte{0}) {
			if p, ok := bytes.CutPrefix(kv, []byte("RABBITMQ_NODE_PORT=")); ok {
				nodePort = string(p)
			}
		}
		if nodePort == port {
			n, _ := strconv.Atoi(filepath.Base(dir))
			return n
		}
	}
	return 0
}

// procCPU is a process's user and system CPU time.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command (which may hold spaces) in parentheses;
	// utime and stime are the 14th and 15th of the line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	// Clock ticks of 1/100 s (USER_HZ is 100 on Linux).
	return time.Duration(u+s) * 10 * time.Millisecond
}
