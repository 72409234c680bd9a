package podshim_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// readArchive returns the entries of a files stream as name -> "mode content".
func readArchive(t *testing.T, rc io.ReadCloser) map[string]string {
	t.Helper()
	defer rc.Close()
	got := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("reading archive: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			t.Errorf("entry %s has type %q, want a regular file", hdr.Name, hdr.Typeflag)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = os.FileMode(hdr.Mode).String() + " " + string(b)
	}
}

func TestFilesArchive(t *testing.T) {
	base := t.TempDir()
	write := func(p, content string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		t.Helper()
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	// Atomic-writer layout of a secret volume with an item in a subdirectory.
	secret := filepath.Join(base, "secret")
	ts := "..2025_11_23_10_00_00.000000001"
	write(filepath.Join(secret, ts, "token"), "t0k", 0o644)
	write(filepath.Join(secret, ts, "sub", "ca.crt"), "ca", 0o600)
	link(ts, filepath.Join(secret, "..data"))
	link("..data/token", filepath.Join(secret, "token"))
	link("..data/sub", filepath.Join(secret, "sub"))
	link("/etc/passwd", filepath.Join(secret, "evil"))
	// A plain volume.
	plain := filepath.Join(base, "plain")
	write(filepath.Join(plain, "..hidden-looking"), "dots", 0o640)
	write(filepath.Join(plain, "d", "e", "f"), "deep", 0o755)
	write(filepath.Join(plain, tunnel.FilesErrorsName), "reserved", 0o644)
	write(filepath.Join(base, "big", "blob"), strings.Repeat("x", 2000), 0o644)
	write(filepath.Join(base, "single.conf"), "one", 0o644)
	locked := filepath.Join(base, "locked")
	write(filepath.Join(locked, "secret"), "hidden", 0o000)
	// Root reads any file, so only an unprivileged run sees the permission error.
	lockedWant := map[string]string{"0/secret": "---------- hidden"}
	if os.Geteuid() != 0 {
		lockedWant = map[string]string{"0/.tp-errors": "-rw-r--r-- secret: permission denied\n"}
	}

	client := newClient(startServerT(t), testToken)
	tests := []struct {
		name     string
		paths    []string
		maxBytes int64
		want     map[string]string
	}{
		{
			name:  "resolved atomic-writer view",
			paths: []string{secret},
			want: map[string]string{
				"0/token":      "-rw-r--r-- t0k",
				"0/sub/ca.crt": "-rw------- ca",
				"0/.tp-errors": "-rw-r--r-- 1 symbolic link(s) pointing outside " + secret + " skipped\n",
			},
		},
		{
			name:  "plain directory, file mount and a missing path",
			paths: []string{plain, filepath.Join(base, "single.conf"), filepath.Join(base, "missing")},
			want: map[string]string{
				"0/d/e/f":      "-rwxr-xr-x deep",
				"0/.tp-errors": "-rw-r--r-- .tp-errors: reserved name, not sent\n",
				"1":            "-rw-r--r-- one",
				"2/.tp-errors": "-rw-r--r-- " + filepath.Join(base, "missing") + ": no such file or directory\n",
			},
		},
		{
			name:     "over the byte limit",
			paths:    []string{filepath.Join(base, "single.conf"), filepath.Join(base, "big")},
			maxBytes: 1000,
			want: map[string]string{
				"0":             "-rw-r--r-- one",
				"1/.tp-skipped": "-rw-r--r-- at least 2.0 KiB, exceeds the 1000 bytes limit\n",
			},
		},
		{
			name:  "unreadable file",
			paths: []string{locked},
			want:  lockedWant,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := client.Files(context.Background(), tt.paths, tt.maxBytes)
			if err != nil {
				t.Fatalf("Files: %v", err)
			}
			got := readArchive(t, rc)
			if !maps.Equal(got, tt.want) {
				t.Errorf("archive:\n%q\nwant:\n%q", got, tt.want)
			}
		})
	}
}

func TestFilesBadRequest(t *testing.T) {
	client := newClient(startServerT(t), testToken)
	tests := []struct {
		name     string
		paths    []string
		maxBytes int64
	}{
		{"no paths", nil, 0},
		{"relative path", []string{"etc/config"}, 0},
		{"unclean path", []string{"/etc/../config"}, 0},
		{"trailing slash", []string{"/etc/config/"}, 0},
		{"slash", []string{"/"}, 0},
		{"too many paths", slices.Repeat([]string{"/etc"}, tunnel.MaxFilesPaths+1), 0},
		{"negative limit", []string{"/etc"}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := client.Files(context.Background(), tt.paths, tt.maxBytes)
			var de *tunnel.RemoteError
			if !errors.As(err, &de) || de.Code != tunnel.CodeBadRequest {
				if rc != nil {
					rc.Close()
				}
				t.Errorf("Files = %v, want a %s error", err, tunnel.CodeBadRequest)
			}
		})
	}
}

// startServerT runs a token-protected server and returns its address.
func startServerT(t *testing.T) string {
	addr, _ := startServer(t, &podshim.Server{Token: testToken})
	return addr
}
