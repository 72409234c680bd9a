package main

import (
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
)

// runCaptured runs podshim's run with args and TP_TOKEN set to token (unset when nil), and
// returns its exit code and what it logged to stderr.
func runCaptured(t *testing.T, args []string, token *string) (int, string) {
	t.Helper()
	t.Setenv("TP_TOKEN", "")
	if token == nil {
		os.Unsetenv("TP_TOKEN")
	} else {
		t.Setenv("TP_TOKEN", *token)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	out := make(chan string)
	go func() { b, _ := io.ReadAll(r); out <- string(b) }()
	code := run(args)
	os.Stderr = saved
	w.Close()
	return code, <-out
}

// listenLine is how podshim reports its listener.
var listenLine = regexp.MustCompile(`listening on (\S+)`)

// TestRunRefusesWithoutToken checks that podshim does not serve without a session token unless
// told so explicitly (-insecure-no-token, for tests), rejects a non-positive idle timeout, and
// otherwise serves on the loopback address it is given, by default 127.0.0.1:4747, and exits 0
// once idle. The idle timeout is short, so a podshim that wrongly starts ends the test quickly
// with exit code 0 instead of the expected 2.
func TestRunRefusesWithoutToken(t *testing.T) {
	token, empty := "0123456789abcdef", ""
	cases := []struct {
		name     string
		args     []string
		token    *string
		wantCode int
		wantLog  string // a part of stderr
		// wantListen is the address podshim must report listening on ("" when it must not listen).
		wantListen string
	}{
		{"no TP_TOKEN", []string{"-listen=127.0.0.1:0", "-idle-timeout=300ms"}, nil, 2, "TP_TOKEN is not set", ""},
		{"empty TP_TOKEN", []string{"-listen=127.0.0.1:0", "-idle-timeout=300ms"}, &empty, 2, "TP_TOKEN is not set", ""},
		{"zero idle timeout", []string{"-listen=127.0.0.1:0", "-idle-timeout=0"}, &token, 2, "-idle-timeout must be positive", ""},
		{"token", []string{"-listen=127.0.0.1:0", "-idle-timeout=300ms"}, &token, 0, "no client heard from", "127.0.0.1:"},
		{"insecure, explicitly", []string{"-listen=127.0.0.1:0", "-idle-timeout=300ms", "-insecure-no-token"}, nil, 0, "no client heard from", "127.0.0.1:"},
		{"default listen address", []string{"-idle-timeout=300ms"}, &token, 0, "no client heard from", "127.0.0.1:4747"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wantListen == "127.0.0.1:4747" {
				ln, err := net.Listen("tcp", tc.wantListen)
				if err != nil {
					t.Skipf("port 4747 is busy here: %v", err)
				}
				ln.Close()
			}
			code, log := runCaptured(t, tc.args, tc.token)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.wantCode, log)
			}
			if !strings.Contains(log, tc.wantLog) {
				t.Errorf("stderr does not say %q:\n%s", tc.wantLog, log)
			}
			m := listenLine.FindStringSubmatch(log)
			switch {
			case tc.wantListen == "" && m != nil:
				t.Errorf("podshim listened on %s; it must not start", m[1])
			case tc.wantListen != "" && (m == nil || !strings.HasPrefix(m[1], tc.wantListen)):
				t.Errorf("podshim listening line %q, want an address starting with %s", m, tc.wantListen)
			}
		})
	}
}
