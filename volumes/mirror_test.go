package volumes_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
	"github.com/kubectl-tp/kubectl-tp/volumes"
)

// startShim runs a podshim server on a loopback listener and returns a client for it.
func startShim(t *testing.T) *tunnel.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv := &podshim.Server{Token: "tok", IdleTimeout: time.Minute}
	go func() {
		defer close(done)
		srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := ln.Addr().String()
	return &tunnel.Client{Token: "tok", Open: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
}

// atomicVolume lays out a directory the way the kubelet's atomic writer does for
// configMap, secret, downwardAPI and projected volumes.
type atomicVolume struct {
	dir string
	gen int
	cur string   // current timestamped directory
	top []string // current top-level visible names
}

// write publishes files (slash path -> content) as a new generation: a new
// timestamped directory, "..data" swapped to it by rename, the top-level symbolic
// links updated and the previous generation removed.
func (v *atomicVolume) write(t *testing.T, files map[string]string) {
	t.Helper()
	v.gen++
	ts := fmt.Sprintf("..2025_11_23_10_00_%02d.%09d", v.gen, v.gen)
	var top []string
	for name, content := range files {
		p := filepath.Join(v.dir, ts, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), 0o644))
		if first, _, _ := strings.Cut(name, "/"); !slices.Contains(top, first) {
			top = append(top, first)
		}
	}
	must(t, os.Symlink(ts, filepath.Join(v.dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")))
	for _, name := range top {
		if !slices.Contains(v.top, name) {
			must(t, os.Symlink(path.Join("..data", name), filepath.Join(v.dir, name)))
		}
	}
	for _, name := range v.top {
		if !slices.Contains(top, name) {
			must(t, os.Remove(filepath.Join(v.dir, name)))
		}
	}
	if v.cur != "" {
		must(t, os.RemoveAll(filepath.Join(v.dir, v.cur)))
	}
	v.cur, v.top = ts, top
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tree lists root: regular files as path -> content and directories as "path/" -> "".
// It fails the test on a symbolic link, a file not 0600 or a directory not 0700.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("directory %s has mode %v, want 0700", rel, fi.Mode().Perm())
			}
			got[rel+"/"] = ""
		case fi.Mode().IsRegular():
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("file %s has mode %v, want 0600", rel, fi.Mode().Perm())
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = string(b)
		default:
			t.Errorf("%s is a %v, want only files and directories", rel, fi.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// withDirs returns files plus an entry for every directory above them and for dirs.
func withDirs(files map[string]string, dirs ...string) map[string]string {
	out := maps.Clone(files)
	add := func(d string) {
		for ; d != "." && d != "/"; d = filepath.Dir(d) {
			out[d+"/"] = ""
		}
	}
	for f := range files {
		add(filepath.Dir(f))
	}
	for _, d := range dirs {
		add(d)
	}
	return out
}

func diffTrees(got, want map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			fmt.Fprintf(&b, "missing %s\n", k)
		} else if g != want[k] {
			fmt.Fprintf(&b, "%s = %q, want %q\n", k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "unexpected %s\n", k)
		}
	}
	return b.String()
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// logSink collects Logf output.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logSink) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.Join(l.lines, "\n")
	l.lines = nil
	return s
}

func TestSyncFollowsRemoteChanges(t *testing.T) {
	base := t.TempDir()
	must(t, os.WriteFile(filepath.Join(base, "outside.txt"), []byte("outside"), 0o644))

	// A configMap volume, with symbolic links escaping it added by hand.
	cm := &atomicVolume{dir: filepath.Join(base, "cm")}
	must(t, os.Mkdir(cm.dir, 0o777))
	cm.write(t, map[string]string{"key": "v1", "nested/inner": "n1"})
	must(t, os.Symlink("/etc/passwd", filepath.Join(cm.dir, "evil")))
	must(t, os.Symlink("../outside.txt", filepath.Join(cm.dir, "evil2")))

	// An emptyDir-like volume.
	data := filepath.Join(base, "data")
	must(t, os.MkdirAll(filepath.Join(data, "dir"), 0o777))
	must(t, os.WriteFile(filepath.Join(data, "a.txt"), []byte("a1"), 0o644))
	must(t, os.WriteFile(filepath.Join(data, "dir", "b.txt"), []byte("b1"), 0o640))
	must(t, os.Symlink("dir/b.txt", filepath.Join(data, "link-in")))
	must(t, os.Symlink("../outside.txt", filepath.Join(data, "link-out")))
	must(t, os.Symlink(".", filepath.Join(data, "loop")))

	// A single file mounted with subPath.
	single := filepath.Join(base, "app.conf")
	must(t, os.WriteFile(single, []byte("conf1"), 0o644))

	local := filepath.Join(base, "local")
	client := startShim(t)
	logs := &logSink{}
	m := &volumes.Mirror{
		Root:   local,
		Mounts: []string{cm.dir, data, single},
		Fetch: func(ctx context.Context, paths []string) (io.ReadCloser, error) {
			return client.Files(ctx, paths, 0)
		},
		Logf: logs.logf,
	}
	at := func(p string) string { return filepath.Join(strings.TrimPrefix(p, "/"), "") }
	key := at(filepath.Join(cm.dir, "key"))

	steps := []struct {
		name      string
		change    func(t *testing.T)
		want      map[string]string // below local
		wantLog   string            // substring of the logs of this step; "" means no logs
		sameInode bool              // the local copy of key keeps its inode
	}{
		{
			name: "initial copy resolves the atomic-writer layout",
			want: map[string]string{
				key: "v1",
				at(filepath.Join(cm.dir, "nested/inner")): "n1",
				at(filepath.Join(data, "a.txt")):          "a1",
				at(filepath.Join(data, "dir/b.txt")):      "b1",
				at(filepath.Join(data, "link-in")):        "b1",
				at(single):                                "conf1",
			},
			wantLog: "symbolic link(s) pointing outside",
		},
		{
			name:      "nothing changed keeps files in place",
			want:      nil, // same as before
			sameInode: true,
		},
		{
			name: "kubelet update swaps ..data",
			change: func(t *testing.T) {
				cm.write(t, map[string]string{"key": "v2", "nested/inner": "n1", "new": "x"})
			},
			want: map[string]string{
				key: "v2",
				at(filepath.Join(cm.dir, "nested/inner")): "n1",
				at(filepath.Join(cm.dir, "new")):          "x",
				at(filepath.Join(data, "a.txt")):          "a1",
				at(filepath.Join(data, "dir/b.txt")):      "b1",
				at(filepath.Join(data, "link-in")):        "b1",
				at(single):                                "conf1",
			},
		},
		{
			name: "removed keys and files are removed locally",
			change: func(t *testing.T) {
				cm.write(t, map[string]string{"key": "v2"})
				must(t, os.Remove(filepath.Join(data, "a.txt")))
				must(t, os.WriteFile(filepath.Join(data, "dir", "b.txt"), []byte("b2"), 0o640))
				must(t, os.WriteFile(single, []byte("conf2"), 0o644))
			},
			want: map[string]string{
				key:                                  "v2",
				at(filepath.Join(data, "dir/b.txt")): "b2",
				at(filepath.Join(data, "link-in")):   "b2",
				at(single):                           "conf2",
			},
			sameInode: true,
		},
		{
			name: "local tampering is repaired",
			change: func(t *testing.T) {
				must(t, os.WriteFile(filepath.Join(local, key), []byte("tampered"), 0o644))
				must(t, os.Chmod(filepath.Join(local, key), 0o644))
				must(t, os.Remove(filepath.Join(local, at(single))))
			},
			want: map[string]string{
				key:                                  "v2",
				at(filepath.Join(data, "dir/b.txt")): "b2",
				at(filepath.Join(data, "link-in")):   "b2",
				at(single):                           "conf2",
			},
		},
	}
	var want map[string]string
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.change != nil {
				st.change(t)
			}
			var before uint64
			if st.sameInode {
				before = inode(t, filepath.Join(local, key))
			}
			if err := m.Sync(context.Background()); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if st.want != nil {
				want = withDirs(st.want, at(cm.dir), at(data))
			}
			if d := diffTrees(tree(t, local), want); d != "" {
				t.Errorf("local copy differs:\n%s", d)
			}
			fi, err := os.Stat(local)
			must(t, err)
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("root mode %v, want 0700", fi.Mode().Perm())
			}
			if st.sameInode && inode(t, filepath.Join(local, key)) != before {
				t.Errorf("unchanged %s was rewritten", key)
			}
			got := logs.take()
			if st.wantLog == "" && got != "" || !strings.Contains(got, st.wantLog) {
				t.Errorf("logs %q, want %q", got, st.wantLog)
			}
		})
	}
}

func TestMaxBytes(t *testing.T) {
	tests := []struct {
		name     string
		maxBytes int64
		grow     bool   // a third file is added to the big mount after the first Sync
		wantSkip string // substring of the reason; "" means the big mount is copied
		wantBig  bool   // the first two files of the big mount are present locally
	}{
		{name: "within the limit", maxBytes: 100, wantBig: true},
		{name: "over the limit", maxBytes: 10, wantSkip: "exceeds the 10 bytes limit"},
		{name: "over the limit after a copy keeps the last copy", maxBytes: 20, grow: true, wantSkip: "exceeds the 20 bytes limit", wantBig: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			big := filepath.Join(base, "big")
			small := filepath.Join(base, "small")
			must(t, os.MkdirAll(filepath.Join(big, "d"), 0o755))
			must(t, os.Mkdir(small, 0o755))
			must(t, os.WriteFile(filepath.Join(big, "one"), []byte("12345678"), 0o644))
			must(t, os.WriteFile(filepath.Join(big, "d", "two"), []byte("12345678"), 0o644))
			must(t, os.WriteFile(filepath.Join(small, "s"), []byte("1234"), 0o644))

			client := startShim(t)
			local := filepath.Join(base, "local")
			var skips []string
			m := &volumes.Mirror{
				Root:     local,
				Mounts:   []string{big, small},
				MaxBytes: tt.maxBytes,
				Fetch: func(ctx context.Context, paths []string) (io.ReadCloser, error) {
					return client.Files(ctx, paths, tt.maxBytes)
				},
				OnSkip: func(mount, reason string) { skips = append(skips, mount+": "+reason) },
			}
			for i := range 3 { // later Syncs must not report the same skip again
				if i == 1 && tt.grow {
					must(t, os.WriteFile(filepath.Join(big, "d", "three"), []byte("12345678"), 0o644))
				}
				if err := m.Sync(context.Background()); err != nil {
					t.Fatalf("Sync: %v", err)
				}
			}
			at := func(p string) string { return strings.TrimPrefix(p, "/") }
			want := map[string]string{filepath.Join(at(small), "s"): "1234"}
			if tt.wantBig {
				want[filepath.Join(at(big), "one")] = "12345678"
				want[filepath.Join(at(big), "d/two")] = "12345678"
			}
			if tt.wantSkip == "" {
				if len(skips) != 0 {
					t.Errorf("OnSkip called: %q", skips)
				}
			} else if len(skips) != 1 || !strings.HasPrefix(skips[0], big+": ") || !strings.Contains(skips[0], tt.wantSkip) {
				t.Errorf("OnSkip calls %q, want one for %s containing %q", skips, big, tt.wantSkip)
			}
			if d := diffTrees(tree(t, local), withDirs(want)); d != "" {
				t.Errorf("local copy differs:\n%s", d)
			}
		})
	}
}

// archive builds a tar archive of the given entries.
type entry struct {
	hdr  tar.Header
	body string
}

func archive(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		must(t, tw.WriteHeader(&h))
		if e.body != "" {
			_, err := tw.Write([]byte(e.body))
			must(t, err)
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

func file(name, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name}, body: body}
}

func fetchBytes(b []byte) func(context.Context, []string) (io.ReadCloser, error) {
	return func(context.Context, []string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

func TestRejectsHostileArchive(t *testing.T) {
	tests := []struct {
		name string
		bad  entry
	}{
		{"parent escape", file("../x", "pwned")},
		{"absolute name", file("/abs/x", "pwned")},
		{"escape after the index", file("0/../../x", "pwned")},
		{"dot component", file("0/./x", "pwned")},
		{"empty component", file("0//x", "pwned")},
		{"index out of range", file("1/x", "pwned")},
		{"negative index", file("-1/x", "pwned")},
		{"index with a leading zero", file("00/x", "pwned")},
		{"no index", file("x", "pwned")},
		{"symbolic link", entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "0/link", Linkname: "/etc/passwd"}}},
		{"relative symbolic link", entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "0/link", Linkname: "../../../x"}}},
		{"hard link", entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "0/hard", Linkname: "/etc/passwd"}}},
		{"directory", entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "0/d"}}},
		{"device", entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "0/null", Devmajor: 1, Devminor: 3}}},
		{"fifo", entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "0/fifo"}}},
		{"over the byte limit", file("0/big", strings.Repeat("x", 65))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			local := filepath.Join(base, "root")
			m := &volumes.Mirror{
				Root:     local,
				Mounts:   []string{"/vol"},
				MaxBytes: 64,
				Fetch:    fetchBytes(archive(t, file("0/ok", "fine"), tt.bad, file("0/after", "late"))),
			}
			err := m.Sync(context.Background())
			if err == nil || !strings.Contains(err.Error(), "rejecting archive") {
				t.Errorf("Sync error %v, want a rejected archive", err)
			}
			entries, err := os.ReadDir(base)
			must(t, err)
			if len(entries) != 1 || entries[0].Name() != "root" {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("%s holds %q, want only root", base, names)
			}
			want := withDirs(map[string]string{"vol/ok": "fine"})
			if d := diffTrees(tree(t, local), want); d != "" {
				t.Errorf("local copy differs:\n%s", d)
			}
		})
	}
}

func TestNeverFollowsLocalSymlinks(t *testing.T) {
	tests := []struct {
		name    string
		plant   func(t *testing.T, local, outside string)
		wantErr string            // substring; "" means success
		want    map[string]string // below local, symbolic links excluded
	}{
		{
			name: "file is a symbolic link to a file outside",
			plant: func(t *testing.T, local, outside string) {
				must(t, os.MkdirAll(filepath.Join(local, "vol"), 0o700))
				must(t, os.Symlink(filepath.Join(outside, "victim"), filepath.Join(local, "vol", "key")))
			},
			want: map[string]string{"vol/": "", "vol/key": "new"},
		},
		{
			name: "file is a dangling symbolic link",
			plant: func(t *testing.T, local, outside string) {
				must(t, os.MkdirAll(filepath.Join(local, "vol"), 0o700))
				must(t, os.Symlink(filepath.Join(outside, "created"), filepath.Join(local, "vol", "key")))
			},
			want: map[string]string{"vol/": "", "vol/key": "new"},
		},
		{
			name: "mount directory is a symbolic link to outside",
			plant: func(t *testing.T, local, outside string) {
				must(t, os.Symlink(outside, filepath.Join(local, "vol")))
			},
			wantErr: "not a directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			local := filepath.Join(base, "root")
			outside := filepath.Join(base, "outside")
			must(t, os.Mkdir(local, 0o700))
			must(t, os.Mkdir(outside, 0o700))
			must(t, os.WriteFile(filepath.Join(outside, "victim"), []byte("original"), 0o600))
			tt.plant(t, local, outside)
			m := &volumes.Mirror{
				Root:   local,
				Mounts: []string{"/vol"},
				Fetch:  fetchBytes(archive(t, file("0/key", "new"))),
			}
			err := m.Sync(context.Background())
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Sync error %v, want %q", err, tt.wantErr)
			}
			if d := diffTrees(tree(t, outside), map[string]string{"victim": "original"}); d != "" {
				t.Errorf("outside changed:\n%s", d)
			}
			if tt.want != nil {
				if d := diffTrees(tree(t, local), tt.want); d != "" {
					t.Errorf("local copy differs:\n%s", d)
				}
			}
		})
	}
}

func TestCheckRoot(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		wantErr string // substring; "" means success
	}{
		{name: "missing directory is created", prepare: func(*testing.T, string) {}},
		{name: "empty directory", prepare: func(t *testing.T, dir string) { must(t, os.Mkdir(dir, 0o755)) }},
		{
			name: "directory not empty",
			prepare: func(t *testing.T, dir string) {
				must(t, os.Mkdir(dir, 0o755))
				must(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
			},
			wantErr: "is not empty",
		},
		{
			name:    "a file",
			prepare: func(t *testing.T, dir string) { must(t, os.WriteFile(dir, nil, 0o644)) },
			wantErr: "is not a directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "mnt")
			must(t, os.MkdirAll(filepath.Dir(dir), 0o755))
			tt.prepare(t, dir)
			err := volumes.CheckRoot(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("CheckRoot = %v, want a one-line error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("CheckRoot: %v", err)
			}
			fi, err := os.Stat(dir)
			if err != nil || !fi.IsDir() {
				t.Fatalf("after CheckRoot: %v, %v", fi, err)
			}
		})
	}
	dir := filepath.Join(t.TempDir(), "new")
	must(t, volumes.CheckRoot(dir))
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created directory: %v, %v; want mode 0700", fi, err)
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name          string
		syncFirst     bool
		wantFirstWait bool // Run waits one Interval before its first fetch
	}{
		{name: "after Sync, Run waits one interval", syncFirst: true, wantFirstWait: true},
		{name: "without Sync, Run syncs at once", syncFirst: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vol := &atomicVolume{dir: filepath.Join(t.TempDir(), "cm")}
			must(t, os.Mkdir(vol.dir, 0o755))
			vol.write(t, map[string]string{"key": "v1"})
			client := startShim(t)
			fetches := make(chan struct{}, 100)
			const interval = 300 * time.Millisecond
			m := &volumes.Mirror{
				Root:     filepath.Join(t.TempDir(), "local"),
				Mounts:   []string{vol.dir},
				Interval: interval,
				Fetch: func(ctx context.Context, paths []string) (io.ReadCloser, error) {
					fetches <- struct{}{}
					return client.Files(ctx, paths, 0)
				},
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.syncFirst {
				must(t, m.Sync(ctx))
				<-fetches
			}
			start := time.Now()
			runErr := make(chan error, 1)
			go func() { runErr <- m.Run(ctx) }()
			<-fetches
			if waited := time.Since(start); (waited >= interval) != tt.wantFirstWait {
				t.Errorf("first fetch of Run after %v; want waiting an interval (%v) = %v", waited, interval, tt.wantFirstWait)
			}

			vol.write(t, map[string]string{"key": "v2"})
			local := filepath.Join(m.Root, strings.TrimPrefix(vol.dir, "/"), "key")
			deadline := time.Now().Add(10 * time.Second)
			for {
				b, err := os.ReadFile(local)
				if err == nil && string(b) == "v2" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("local key = %q, %v; want v2 within 10s", b, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			select {
			case err := <-runErr:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run = %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name    string
		root    string // "" uses a synced temporary root
		wantErr bool
	}{
		{name: "synced root"},
		{name: "empty root refused", root: "", wantErr: true},
		{name: "slash refused", root: "/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &volumes.Mirror{Root: tt.root}
			if !tt.wantErr {
				m.Root = filepath.Join(t.TempDir(), "local")
				m.Mounts = []string{"/vol"}
				m.Fetch = fetchBytes(archive(t, file("0/key", "v")))
				must(t, m.Sync(context.Background()))
			}
			err := m.Remove()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Remove = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr {
				if _, err := os.Lstat(m.Root); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("root still there: %v", err)
				}
			}
		})
	}
}

func TestMountValidation(t *testing.T) {
	tests := []struct {
		name   string
		mounts []string
	}{
		{"relative", []string{"vol"}},
		{"not clean", []string{"/a/../b"}},
		{"slash", []string{"/"}},
		{"duplicate", []string{"/a", "/a"}},
		{"too many", slices.Repeat([]string{"/a"}, tunnel.MaxFilesPaths+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fetched := false
			m := &volumes.Mirror{
				Root:   filepath.Join(t.TempDir(), "local"),
				Mounts: tt.mounts,
				Fetch: func(context.Context, []string) (io.ReadCloser, error) {
					fetched = true
					return nil, errors.New("unreachable")
				},
			}
			if err := m.Sync(context.Background()); err == nil || fetched {
				t.Errorf("Sync = %v (fetched %v), want an error before fetching", err, fetched)
			}
		})
	}
}

func TestNoKubernetesImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if !slices.Contains(lines, "github.com/kubectl-tp/kubectl-tp/volumes") {
		t.Fatalf("go list did not list the package itself: %q", out)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "k8s.io/") {
			t.Errorf("volumes depends on %s", l)
		}
	}
}
