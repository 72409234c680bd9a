// Package logger is kubectl-tp's one logging type, after tailscale's types/logger: a printf-like
// function value, with prefixes and a rate limit per format string so that a failure repeated per
// connection or per retry prints a few lines, not thousands.
//
// What it leaves out: levels (callers choose which Logf to call: the session's normal one, or its
// -v one), structured fields, and output: a Logf writes wherever its creator sends it.
package logger

import (
	"sync"
	"time"
)

// Logf prints one line (a trailing newline is the caller's to omit). The zero value is not
// callable; use Discard.
type Logf func(format string, args ...any)

// Discard is a Logf that prints nothing.
func Discard(string, ...any) {}

// WithPrefix returns a Logf that prints prefix before every line of l.
func (l Logf) WithPrefix(prefix string) Logf {
	return func(format string, args ...any) { l(prefix+format, args...) }
}

// RateLimited returns a Logf that prints each format string of l at most burst times per window;
// the lines dropped are counted and said with the next line of that format that is printed. It
// keeps state per format string (a program has few), and is safe for concurrent use.
func RateLimited(l Logf, window time.Duration, burst int) Logf {
	return rateLimited(l, window, burst, time.Now)
}

func rateLimited(l Logf, window time.Duration, burst int, now func() time.Time) Logf {
	type state struct {
		start   time.Time
		n       int
		dropped int
	}
	var mu sync.Mutex
	seen := map[string]*state{}
	return func(format string, args ...any) {
		mu.Lock()
		st := seen[format]
		t := now()
		if st == nil || t.Sub(st.start) >= window {
			if st == nil {
				st = &state{}
				seen[format] = st
			}
			st.start, st.n = t, 0
		}
		st.n++
		if st.n > burst {
			st.dropped++
			mu.Unlock()
			return
		}
		dropped := st.dropped
		st.dropped = 0
		mu.Unlock()
		if dropped > 0 {
			l(format+" (%d similar lines suppressed)", append(args, dropped)...)
			return
		}
		l(format, args...)
	}
}
