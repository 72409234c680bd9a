package logger

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func collect() (Logf, *[]string) {
	var lines []string
	return func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }, &lines
}

func TestWithPrefix(t *testing.T) {
	l, lines := collect()
	l.WithPrefix("a: ").WithPrefix("b: ")("x %d", 1)
	if len(*lines) != 1 || (*lines)[0] != "a: b: x 1" {
		t.Fatalf("got %q", *lines)
	}
}

// TestRateLimited: a format printed in a loop shows burst lines per window, then the count of the
// lines it dropped; other formats are not held back by it.
func TestRateLimited(t *testing.T) {
	tests := []struct {
		name   string
		burst  int
		calls  int
		window time.Duration
		want   int // lines printed by the calls
	}{
		{"under the burst", 5, 3, time.Hour, 3},
		{"a flood", 3, 1000, time.Hour, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, lines := collect()
			rl := RateLimited(l, tt.window, tt.burst)
			for i := range tt.calls {
				rl("dial %d failed", i)
			}
			rl("another %s", "format")
			if got := len(*lines) - 1; got != tt.want {
				t.Fatalf("%d lines for %d calls, want %d: %q", got, tt.calls, tt.want, *lines)
			}
			if last := (*lines)[len(*lines)-1]; last != "another format" {
				t.Errorf("another format was held back: %q", last)
			}
		})
	}
	// After the window, the next line says how many were dropped.
	l, lines := collect()
	clock := time.Unix(0, 0)
	rl := rateLimited(l, time.Minute, 1, func() time.Time { return clock })
	rl("x %d", 1)
	rl("x %d", 2)
	rl("x %d", 3)
	clock = clock.Add(time.Minute)
	rl("x %d", 4)
	rl("x %d", 5)
	want := []string{"x 1", "x 4 (2 similar lines suppressed)"}
	if strings.Join(*lines, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", *lines, want)
	}
}
