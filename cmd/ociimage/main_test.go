package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "bin")
	if err := os.WriteFile(src, []byte("binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	tests := []struct {
		name    string
		args    []string
		want    string // regexp the printed line must match
		wantErr string
	}{
		{
			name: "single platform",
			args: []string{"-ref", "ghcr.io/kubectl-tp/podshim:v0.1.0", "-out", out, "-user", "65532:65532", "-entrypoint", "/podshim", "-env", "A=1", src + ":/podshim"},
			want: `^wrote ` + regexp.QuoteMeta(out) + ` \(ghcr\.io/kubectl-tp/podshim:v0\.1\.0, sha256:[0-9a-f]{64}\)\n$`,
		},
		{
			name: "two platforms",
			args: []string{"-ref", "example.com/a:b", "-out", out, "-platform", "linux/amd64, linux/arm64", src + ":/a:0644"},
			want: `^wrote .* \(example\.com/a:b, sha256:[0-9a-f]{64}\)\n$`,
		},
		{name: "no ref", args: []string{"-out", out, src + ":/a"}, wantErr: "-ref and -out are required"},
		{name: "bad file spec", args: []string{"-ref", "a/b", "-out", out, src}, wantErr: "not SRC:DST[:MODE]"},
		{name: "bad platform", args: []string{"-ref", "a/b", "-out", out, "-platform", "linux", src + ":/a"}, wantErr: "not os/arch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := run(tt.args, &stdout, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("run error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(tt.want).MatchString(stdout.String()) {
				t.Errorf("printed %q, want a match of %s", stdout.String(), tt.want)
			}
		})
	}
}
