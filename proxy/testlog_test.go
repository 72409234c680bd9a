package proxy

import (
	"sync"
	"testing"
)

// testLogf returns a Logf that writes to t.Logf while t runs and drops lines once its cleanup has
// begun. A server's connection goroutines can still log after Close returns (Close closes the
// connections but does not wait for their goroutines), and t.Logf after the end of t is a data race
// that fails the test under -race.
func testLogf(t *testing.T) func(format string, args ...any) {
	var mu sync.Mutex
	ended := false
	t.Cleanup(func() {
		mu.Lock()
		ended = true
		mu.Unlock()
	})
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !ended {
			t.Logf(format, args...)
		}
	}
}
