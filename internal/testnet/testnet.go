// Package testnet holds loopback network fixtures shared by the unit tests of several packages: a
// TCP echo server and a concurrency-safe log collector.
//
// It is for tests only and leaves out anything but 127.0.0.1 TCP. It imports only the standard
// library, so podshim's tests may use it.
package testnet

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Serve echoes every connection accepted on ln, half-closing its side after the peer does, until
// the test ends.
func Serve(t testing.TB, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}()
		}
	}()
}

// Echo starts an echo server on a random 127.0.0.1 port and returns its address.
func Echo(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln)
	return ln.Addr().String()
}

// Log collects formatted log lines from many goroutines.
type Log struct {
	mu    sync.Mutex
	lines []string
}

// Logf records one line; it has the signature of the Logf fields of the packages under test.
func (l *Log) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// Count returns how many recorded lines contain substr.
func (l *Log) Count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			n++
		}
	}
	return n
}

// Lines returns a copy of every recorded line.
func (l *Log) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}
