package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Target is one of the project's performance goals, checked against a
// broker's rows. Each broker's file registers its own with registerTarget.
type Target struct {
	Broker string
	// Goal is how the report states it: "publish ≥ 0.9× raw".
	Goal string
	// Measure returns the measured value as printed and whether it meets
	// the goal; ok is false when a row it needs is missing or failed.
	Measure func(g *group) (value string, met, ok bool)
	// Info marks a comparison that is reported, not a goal.
	Info bool
}

// ratioOfRows reports metric(of) / metric(over) between two named rows, for
// information.
func ratioOfRows(broker, goal, of, over string, metric func(Result) float64) Target {
	return Target{Broker: broker, Goal: goal, Info: true, Measure: func(g *group) (string, bool, bool) {
		a, b := g.name(of), g.name(over)
		if a == nil || b == nil || metric(b.res) == 0 {
			return "", false, false
		}
		return fmt.Sprintf("%.2f×", metric(a.res)/metric(b.res)), true, true
	}}
}

var targets []Target

// rowRatioTarget is met when metric(of) / metric(over) ≥ atLeast, between
// two rows named.
func rowRatioTarget(broker, goal, of, over string, metric func(Result) float64, atLeast float64) Target {
	return Target{Broker: broker, Goal: goal, Measure: func(g *group) (string, bool, bool) {
		a, b := g.name(of), g.name(over)
		if a == nil || b == nil || metric(b.res) == 0 {
			return "", false, false
		}
		r := metric(a.res) / metric(b.res)
		return fmt.Sprintf("%.2f×", r), r >= atLeast, true
	}}
}

func registerTarget(t Target) { targets = append(targets, t) }

// ratioTarget is met when metric(of) / metric(over) ≥ atLeast.
func ratioTarget(broker, goal string, of, over Role, metric func(Result) float64, atLeast float64) Target {
	return Target{Broker: broker, Goal: goal, Measure: func(g *group) (string, bool, bool) {
		a, b := g.role(of), g.role(over)
		if a == nil || b == nil || metric(b.res) == 0 {
			return "", false, false
		}
		r := metric(a.res) / metric(b.res)
		return fmt.Sprintf("%.2f×", r), r >= atLeast, true
	}}
}

type row struct {
	s    Scenario
	size int // payload bytes
	res  Result
	err  error
}

// group is the rows of one broker at one payload size.
type group struct {
	broker string
	size   int
	rows   []*row
}

// role returns the first successful row of role r.
func (g *group) role(r Role) *row {
	for _, x := range g.rows {
		if x.s.Role == r && x.err == nil {
			return x
		}
	}
	return nil
}

// name returns the successful row called name.
func (g *group) name(name string) *row {
	for _, x := range g.rows {
		if x.s.Name == name && x.err == nil {
			return x
		}
	}
	return nil
}

type report struct {
	cfg     Config
	sizes   []int // payload sizes of the run, in order
	repeat  int
	started time.Time
	elapsed time.Duration
	rows    []*row
	groups  []*group
}

func (rep *report) add(s Scenario, size int, res Result, err error) {
	x := &row{s: s, size: size, res: res, err: err}
	rep.rows = append(rep.rows, x)
	for _, g := range rep.groups {
		if g.broker == s.Broker && g.size == size {
			g.rows = append(g.rows, x)
			return
		}
	}
	rep.groups = append(rep.groups, &group{broker: s.Broker, size: size, rows: []*row{x}})
}

// sizeLabel prints a payload size: 16 B, 256 B, 64 KiB.
func sizeLabel(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// cpuOverRaw prints the CPU per message that x adds to its broker's raw
// row (the cost of the layers over the raw client, for a bus row), or
// nothing for the raw row itself or without one.
func cpuOverRaw(x, raw *row) string {
	if raw == nil || x == raw {
		return ""
	}
	return fmt.Sprintf("%+.2f", x.res.CPUPerMsg()-raw.res.CPUPerMsg())
}

func (rep *report) markdown() string {
	var b strings.Builder
	cfg := rep.cfg
	fmt.Fprintf(&b, "# Benchmark results\n\n")
	sizes := rep.sizes
	if len(sizes) == 0 {
		sizes = []int{cfg.Size}
	}
	labels := make([]string, len(sizes))
	for i, n := range sizes {
		labels[i] = sizeLabel(n)
	}
	fmt.Fprintf(&b, "Run %s, took %s. %s %s/%s, %d CPUs (GOMAXPROCS %d). Payloads of %s, %d concurrent publishers, %s of publishing per scenario.\n\n",
		rep.started.UTC().Format("2006-01-02 15:04 MST"), rep.elapsed.Round(time.Second), runtime.Version(),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), strings.Join(labels, ", "), cfg.Publishers, cfg.Duration)
	if rep.repeat > 1 {
		fmt.Fprintf(&b, "Every scenario ran %d times, in rounds; each row is its median run (by consume rate, or by p99 for latency rows).\n\n", rep.repeat)
	}
	b.WriteString("CPU over raw: this row's CPU µs per message (or round trip) minus its broker's raw row's, at the same payload size: what the layers above the raw client cost.\n\n")
	if v := versions(); v != "" {
		fmt.Fprintf(&b, "Versions: %s.\n\n", v)
	}

	var tput, lat []*row
	for _, g := range rep.groups {
		for _, x := range g.rows {
			if x.res.Latencies != nil {
				lat = append(lat, x)
			} else {
				tput = append(tput, x)
			}
		}
	}
	if len(tput) > 0 {
		b.WriteString("## Throughput\n\n")
		b.WriteString("| broker | subject | payload | publish msg/s | consume msg/s | vs raw (pub / cons) | vs Watermill (pub / cons) | allocs/msg | CPU µs/msg | CPU over raw |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, x := range tput {
			g := rep.group(x.s.Broker, x.size)
			if x.err != nil {
				fmt.Fprintf(&b, "| %s | %s | %s | failed | failed | | | | | |\n", x.s.Broker, x.s.Name, sizeLabel(x.size))
				continue
			}
			r := x.res
			pub := "—"
			if r.Publish > 0 {
				pub = si(r.PublishRate())
			}
			raw := g.role(RoleRaw)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %.1f | %.2f | %s |\n", x.s.Broker, x.s.Name, sizeLabel(x.size),
				pub, si(r.ConsumeRate()),
				ratios(x, raw), ratios(x, g.role(RolePeer)), r.AllocsPerMsg(), r.CPUPerMsg(), cpuOverRaw(x, raw))
		}
		b.WriteString("\n")
	}
	if len(lat) > 0 {
		b.WriteString("## Latency (back-to-back round trips per client)\n\n")
		b.WriteString("| broker | subject | payload | round trips/s | p50 µs | p99 µs | p999 µs | vs raw (p50 / p99 / p999) | allocs/op | CPU µs/op | CPU over raw |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, x := range lat {
			g := rep.group(x.s.Broker, x.size)
			if x.err != nil {
				fmt.Fprintf(&b, "| %s | %s | %s | failed | | | | | | | |\n", x.s.Broker, x.s.Name, sizeLabel(x.size))
				continue
			}
			r := x.res
			raw := g.role(RoleRaw)
			vs := ""
			if raw != nil && x != raw && x.s.Role != RoleReference && raw.res.Percentile(99) > 0 {
				vs = fmt.Sprintf("%.2f / %.2f / %.2f", latencyRatio(x, raw, 50), latencyRatio(x, raw, 99), latencyRatio(x, raw, 99.9))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %.2f | %s |\n", x.s.Broker, x.s.Name, sizeLabel(x.size),
				si(r.PublishRate()), micros(r.Percentile(50)), micros(r.Percentile(99)), micros(r.Percentile(99.9)), vs,
				r.AllocsPerMsg(), r.CPUPerMsg(), cpuOverRaw(x, raw))
		}
		b.WriteString("\n")
	}

	var checks []string
	for _, t := range targets {
		for _, g := range rep.groups {
			if g.broker != t.Broker {
				continue
			}
			v, met, ok := t.Measure(g)
			if !ok {
				// A row it needs was not run at this size, or failed
				// (the notes say which).
				continue
			}
			verdict := "yes"
			switch {
			case t.Info:
				verdict = "(for information)"
			case !met:
				verdict = "**no**"
			}
			checks = append(checks, fmt.Sprintf("| %s | %s | %s | %s | %s |\n", t.Broker, sizeLabel(g.size), t.Goal, v, verdict))
		}
	}
	if len(checks) > 0 {
		b.WriteString("## Targets\n\n| broker | payload | goal | measured | met |\n|---|--:|---|--:|---|\n")
		for _, c := range checks {
			b.WriteString(c)
		}
		b.WriteString("\n")
	}

	var notes []string
	for _, x := range rep.rows {
		switch {
		case x.err != nil:
			notes = append(notes, fmt.Sprintf("- %s / %s (%s) failed: %v", x.s.Broker, x.s.Name, sizeLabel(x.size), x.err))
		case x.res.Note != "":
			notes = append(notes, fmt.Sprintf("- %s / %s (%s): %s", x.s.Broker, x.s.Name, sizeLabel(x.size), x.res.Note))
		}
	}
	if len(notes) > 0 {
		b.WriteString("## Notes\n\n")
		b.WriteString(strings.Join(notes, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

func (rep *report) group(broker string, size int) *group {
	for _, g := range rep.groups {
		if g.broker == broker && g.size == size {
			return g
		}
	}
	return nil
}

// latencyRatio is x's p-th percentile over raw's.
func latencyRatio(x, raw *row, p float64) float64 {
	r := raw.res.Percentile(p)
	if r <= 0 {
		return 0
	}
	return float64(x.res.Percentile(p)) / float64(r)
}

// ratios prints x's publish and consume rates over base's, or nothing when
// x is base, a reference row, or base is missing.
func ratios(x, base *row) string {
	if base == nil || x == base || x.s.Role == RoleReference || base.res.PublishRate() == 0 || base.res.ConsumeRate() == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f / %.2f", x.res.PublishRate()/base.res.PublishRate(), x.res.ConsumeRate()/base.res.ConsumeRate())
}

// si prints a rate with a k or M suffix and three significant digits.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return trim(v/1e6) + "M"
	case v >= 1e3:
		return trim(v/1e3) + "k"
	default:
		return trim(v)
	}
}

func trim(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func micros(d time.Duration) string {
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond))
}

// versions lists the brokers' and peers' module versions this binary was
// built with.
func versions() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	want := []string{
		"github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go",
		"github.com/ThreeDotsLabs/watermill", "github.com/ThreeDotsLabs/watermill-nats/v2",
	}
	var parts []string
	for _, w := range want {
		for _, d := range bi.Deps {
			if d.Path == w {
				parts = append(parts, strings.TrimPrefix(d.Path, "github.com/")+" "+d.Version)
			}
		}
	}
	return strings.Join(parts, ", ")
}
