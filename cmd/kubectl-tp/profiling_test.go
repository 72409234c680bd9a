package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestProfileFlags(t *testing.T) {
	tests := []struct {
		name    string
		profile string
		wantErr string // "" means a profile must be written
	}{
		{"cpu", "cpu", ""},
		{"heap", "heap", ""},
		{"goroutine", "goroutine", ""},
		{"block", "block", ""},
		{"unknown name", "disk", `--profile "disk" is not one of`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "p.pprof")
			var stdout, stderr bytes.Buffer
			root := newRootCommand(genericiooptions.IOStreams{Out: &stdout, ErrOut: &stderr}, fakeClients(testCluster()))
			root.SetArgs([]string{"--profile", tt.profile, "--profile-output", out, "version"})
			err := root.Execute()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Execute: %v, want an error containing %q", err, tt.wantErr)
				}
				if _, serr := os.Stat(out); serr == nil {
					t.Fatal("a profile file was written for a bad --profile")
				}
				return
			}
			if err != nil {
				t.Fatalf("Execute: %v (stderr %q)", err, stderr.String())
			}
			if !strings.Contains(stdout.String(), "kubectl-tp") {
				t.Errorf("version output %q: the command did not run", stdout.String())
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// A pprof profile is a gzip-compressed protocol buffer.
			zr, err := gzip.NewReader(f)
			if err != nil {
				t.Fatalf("%s is not a pprof profile: %v", out, err)
			}
			if b, err := io.ReadAll(zr); err != nil || len(b) == 0 {
				t.Fatalf("%s: %d bytes after gunzip, %v", out, len(b), err)
			}
		})
	}
}
