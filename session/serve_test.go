package session

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestGoServe: a server that fails while the session runs ends the session with its name; one
// that returns nil, or fails after the session's context ended (Close), does not.
func TestGoServe(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		cancel   bool // the session is closing when the server returns
		wantLost string
	}{
		{"fails while running", errors.New("accept: too many open files"), false, "the SOCKS5 proxy stopped: accept: too many open files"},
		{"returns nil", nil, false, ""},
		{"fails while closing", errors.New("use of closed network connection"), true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			s := &Session{opts: Options{Stderr: &log}, lost: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			s.goServe(ctx, "the SOCKS5 proxy", func() error { return tt.err })
			s.wg.Wait()
			select {
			case <-s.Lost():
				if tt.wantLost == "" || !strings.Contains(s.LostErr().Error(), tt.wantLost) {
					t.Fatalf("session ended with %v, want %q", s.LostErr(), tt.wantLost)
				}
			default:
				if tt.wantLost != "" {
					t.Fatalf("the session goes on after %v", tt.err)
				}
			}
		})
	}
}
