package testenv

import (
	"net/url"
	"regexp"
	"strings"
)

const redacted = "xxxxx"

var (
	// startsURL finds where the next URL of a comma-separated list begins;
	// a comma not followed by a scheme belongs to the current URL (a
	// multi-host PostgreSQL URL, or a comma inside a password).
	startsURL = regexp.MustCompile(`^\s*[A-Za-z][A-Za-z0-9+.-]*://`)
	// secretKeyword matches password=..., sslpassword=..., token=... in a
	// libpq keyword/value string, quoted or not.
	secretKeyword = regexp.MustCompile(`(?is)((?:^|\s)[a-z_]*(?:password|secret|token)[a-z_]*\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)
	// tokenSchemes take a lone user name as an authentication token.
	tokenSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}
)

// Redact returns addr with its secrets replaced by "xxxxx", for messages
// and logs. It handles a single URL, a comma-separated list of URLs, and a
// libpq keyword/value string. It hides the password of every URL, the token
// of a NATS URL that carries a lone user name (nats://token@host), secret
// query parameters (password, secret, token and names containing them), and
// password= or similar keywords. When addr cannot be parsed as a URL it
// keeps only the scheme, so a malformed value never leaks what it holds.
func Redact(addr string) string {
	if !strings.Contains(addr, "://") {
		if secretKeyword.MatchString(addr) {
			return secretKeyword.ReplaceAllString(addr, "${1}"+redacted)
		}
		if at := strings.LastIndexByte(addr, '@'); at >= 0 {
			return redacted + addr[at:]
		}
		return addr
	}
	parts := splitURLs(addr)
	for i, part := range parts {
		parts[i] = redactURL(part)
	}
	return strings.Join(parts, ",")
}

func splitURLs(s string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == ',' && startsURL.MatchString(s[i+1:]) {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func redactURL(raw string) string {
	lead := raw[:len(raw)-len(strings.TrimLeft(raw, " \t"))]
	u, err := url.Parse(strings.TrimSpace(raw))
	// A stray '@' or a fragment means the URL is not what its author meant
	// (an unescaped '/', '?' or '#' in a password, say): part of the secret
	// would show up in the host, path or fragment.
	ats := 0
	if err == nil && u.User != nil {
		ats = 1
	}
	if err != nil || u.Scheme == "" || strings.Count(raw, "@") != ats || u.Fragment != "" || u.RawFragment != "" {
		scheme, _, _ := strings.Cut(strings.TrimSpace(raw), "://")
		return lead + scheme + "://" + redacted
	}
	if u.User != nil {
		if _, hasPassword := u.User.Password(); hasPassword {
			u.User = url.UserPassword(u.User.Username(), redacted)
		} else if tokenSchemes[strings.ToLower(u.Scheme)] {
			u.User = url.User(redacted)
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = redacted
		} else if redactQuery(q) {
			u.RawQuery = q.Encode()
		}
	}
	return lead + u.String()
}

// redactQuery replaces secret values in place and reports whether it did.
func redactQuery(q url.Values) bool {
	changed := false
	for key, vals := range q {
		k := strings.ToLower(key)
		if !strings.Contains(k, "password") && !strings.Contains(k, "secret") && !strings.Contains(k, "token") {
			continue
		}
		for i := range vals {
			vals[i] = redacted
		}
		changed = true
	}
	return changed
}
