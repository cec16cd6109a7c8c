package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Parse errors never quote the configured value: it may hold a password.
var (
	errNotURL  = errors.New("not a valid URL")
	errNoHost  = errors.New("no host")
	errEmpty   = errors.New("empty address list")
	errQuoting = errors.New("unterminated quote in keyword/value connection string")
)

var (
	natsPorts  = map[string]string{"nats": "4222", "tls": "4222", "ws": "80", "wss": "443"}
	redisPorts = map[string]string{"redis": "6379", "rediss": "6379"}
	amqpPorts  = map[string]string{"amqp": "5672", "amqps": "5671"}
	httpPorts  = map[string]string{"http": "80", "https": "443"}
)

const postgresPort = "5432"

// splitList splits a comma-separated list, dropping blanks.
func splitList(v string) []string {
	var out []string
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// urlList parses comma-separated URLs; a part without a scheme gets
// defaultScheme, a URL without a port gets the scheme's usual one.
func urlList(v, defaultScheme string, ports map[string]string) ([]endpoint, error) {
	parts := splitList(v)
	if len(parts) == 0 {
		return nil, errEmpty
	}
	eps := make([]endpoint, 0, len(parts))
	for _, part := range parts {
		if !strings.Contains(part, "://") {
			part = defaultScheme + "://" + part
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, errNotURL
		}
		scheme := strings.ToLower(u.Scheme)
		if scheme == "unix" {
			if u.Path == "" {
				return nil, errNoHost
			}
			eps = append(eps, endpoint{network: "unix", address: u.Path})
			continue
		}
		host := u.Hostname()
		if host == "" {
			return nil, errNoHost
		}
		port := u.Port()
		if port == "" {
			if port = ports[scheme]; port == "" {
				return nil, fmt.Errorf("no port and no default port for scheme %q", scheme)
			}
		}
		eps = append(eps, endpoint{network: "tcp", address: net.JoinHostPort(host, port)})
	}
	return eps, nil
}

// kafkaEndpoints parses "host:port,host:port"; the port defaults to 9092.
func kafkaEndpoints(v string) ([]endpoint, error) {
	parts := splitList(v)
	if len(parts) == 0 {
		return nil, errEmpty
	}
	eps := make([]endpoint, 0, len(parts))
	for _, part := range parts {
		host, port, err := net.SplitHostPort(part)
		if err != nil {
			host, port = strings.Trim(part, "[]"), "9092"
		}
		if host == "" {
			return nil, errNoHost
		}
		eps = append(eps, endpoint{network: "tcp", address: net.JoinHostPort(host, port)})
	}
	return eps, nil
}

// postgresEndpoints accepts the two forms libpq and pgx accept:
// postgres://user:pass@host:port/db?opts and "host=... port=... dbname=...".
// A host that starts with "/" is a Unix socket directory; no host means the
// Debian socket directory, as libpq does.
func postgresEndpoints(v string) ([]endpoint, error) {
	var hosts, ports []string
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil {
			return nil, errNotURL
		}
		for hp := range strings.SplitSeq(u.Host, ",") {
			host, port, err := net.SplitHostPort(hp)
			if err != nil {
				host, port = strings.Trim(hp, "[]"), ""
			}
			hosts = append(hosts, host)
			ports = append(ports, port)
		}
		q := u.Query()
		if h := q.Get("host"); h != "" {
			hosts = strings.Split(h, ",")
		}
		if p := q.Get("port"); p != "" {
			ports = strings.Split(p, ",")
		}
	} else {
		kv, err := parseKeywords(v)
		if err != nil {
			return nil, err
		}
		hosts = strings.Split(kv["host"], ",")
		ports = strings.Split(kv["port"], ",")
	}
	eps := make([]endpoint, 0, len(hosts))
	for i, host := range hosts {
		port := postgresPort
		switch {
		case i < len(ports) && ports[i] != "":
			port = ports[i]
		case len(ports) == 1 && ports[0] != "":
			port = ports[0]
		}
		switch {
		case host == "":
			eps = append(eps, endpoint{network: "unix", address: "/var/run/postgresql/.s.PGSQL." + port})
		case strings.HasPrefix(host, "/"):
			eps = append(eps, endpoint{network: "unix", address: host + "/.s.PGSQL." + port})
		default:
			eps = append(eps, endpoint{network: "tcp", address: net.JoinHostPort(host, port)})
		}
	}
	return eps, nil
}

// parseKeywords reads libpq keyword/value pairs: key=value separated by
// spaces, values optionally in single quotes with backslash escapes.
func parseKeywords(s string) (map[string]string, error) {
	kv := make(map[string]string)
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			return kv, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errors.New("keyword without value in connection string")
		}
		key := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val strings.Builder
		if strings.HasPrefix(s, "'") {
			i, closed := 1, false
			for ; i < len(s); i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
					val.WriteByte(s[i])
					continue
				}
				if s[i] == '\'' {
					closed = true
					break
				}
				val.WriteByte(s[i])
			}
			if !closed {
				return nil, errQuoting
			}
			s = s[i+1:]
		} else {
			end := strings.IndexAny(s, " \t\n\r")
			if end < 0 {
				end = len(s)
			}
			val.WriteString(s[:end])
			s = s[end:]
		}
		kv[key] = val.String()
	}
}
