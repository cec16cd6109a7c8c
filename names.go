package eventbus

import "fmt"

// maxNameLen bounds every type, service, stream and group name, so that every
// broker's naming rules can hold the mapped destination.
const maxNameLen = 128

// validateType checks a message type or stream name: dot-separated tokens of
// letters, digits, '-' and '_' ("order.created", "analytics-clicks"). Its
// error, like validateToken's, names the argument but not the operation:
// the public method adds "eventbus: <operation>: ".
func validateType(kind, s string) error {
	if err := validateTokens(s, true); err != nil {
		return fmt.Errorf("%s %q: %w: %s", kind, s, ErrInvalidName, err.Error())
	}
	return nil
}

// validateToken checks a service or group name: one token, no dots.
func validateToken(kind, s string) error {
	if err := validateTokens(s, false); err != nil {
		return fmt.Errorf("%s %q: %w: %s", kind, s, ErrInvalidName, err.Error())
	}
	return nil
}

type nameProblem string

func (p nameProblem) Error() string { return string(p) }

func validateTokens(s string, dots bool) error {
	if s == "" {
		return nameProblem("empty")
	}
	if len(s) > maxNameLen {
		return nameProblem(fmt.Sprintf("longer than %d bytes", maxNameLen))
	}
	start := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			start = false
		case c == '-' || c == '_':
			if start {
				return nameProblem("a token must start with a letter or digit")
			}
		case c == '.' && dots:
			if start {
				return nameProblem("empty token")
			}
			start = true
		default:
			return nameProblem(fmt.Sprintf("character %q not allowed (letters, digits, '-', '_'%s)", c, map[bool]string{true: " and '.'"}[dots]))
		}
	}
	if start {
		return nameProblem("empty token")
	}
	return nil
}
