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
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
	"github.com/kubectl-tp/kubectl-tp/volumes"
)

// The seed corpus of this target is in testdata/fuzz/FuzzSyncArchive/ and runs with
// every `go test`; `make fuzz` explores from it for FUZZTIME.

// fuzzMounts are the mounts of the fuzzed Mirror; the third is nested in the first.
var fuzzMounts = []string{"/vol", "/etc/config", "/vol/nested"}

// fuzzMaxBytes is the fuzzed Mirror's byte limit per mount.
const fuzzMaxBytes = 4096

// fuzzEntry is one tar entry of a seed.
type fuzzEntry struct {
	hdr  tar.Header
	body string
}

func fuzzReg(name, body string) fuzzEntry {
	return fuzzEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

// fuzzTar builds an archive of entries the way podshim does (GNU or PAX as needed).
func fuzzTar(tb testing.TB, entries ...fuzzEntry) []byte {
	tb.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// fuzzScan reads the archive independently of the Mirror: the bodies of the regular
// entries by local path, whether it holds an entry the Mirror must refuse outright (not
// a regular file, or a name that is absolute or has a ".." component) and whether the
// archive is readable to its end.
func fuzzScan(data []byte) (bodies map[string][]string, hostile, readable bool) {
	bodies = map[string][]string{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return bodies, hostile, true
		}
		if err != nil {
			return bodies, hostile, false
		}
		if hdr.Typeflag != tar.TypeReg || strings.HasPrefix(hdr.Name, "/") || slices.Contains(strings.Split(hdr.Name, "/"), "..") {
			hostile = true
			continue
		}
		idx, rel, ok := fuzzParse(hdr.Name)
		if !ok || hdr.Size > 1<<17 {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return bodies, hostile, false
		}
		if rel == tunnel.FilesSkippedName || rel == tunnel.FilesErrorsName {
			continue
		}
		local := path.Join(strings.TrimPrefix(fuzzMounts[idx], "/"), rel)
		bodies[local] = append(bodies[local], string(body))
	}
}

// fuzzParse splits a valid entry name "index[/rel]" as documented on Mirror.Sync.
func fuzzParse(name string) (int, string, bool) {
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return 0, "", false
		}
	}
	idx, err := strconv.Atoi(parts[0])
	if err != nil || idx < 0 || idx >= len(fuzzMounts) || strconv.Itoa(idx) != parts[0] {
		return 0, "", false
	}
	return idx, strings.Join(parts[1:], "/"), true
}

// fuzzFixChecksums returns data with the checksum of every tar header recomputed, so
// that a mutated header reaches the Mirror instead of failing archive/tar's checksum
// test. It follows the size field from header to header and stops where it cannot.
func fuzzFixChecksums(data []byte) []byte {
	b := bytes.Clone(data)
	for off := 0; off+512 <= len(b); {
		blk := b[off : off+512]
		if bytes.Count(blk, []byte{0}) == len(blk) {
			off += 512
			continue
		}
		copy(blk[148:156], "        ")
		sum := 0
		for _, c := range blk {
			sum += int(c)
		}
		copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
		size, err := strconv.ParseInt(strings.Trim(string(blk[124:136]), " \x00"), 8, 64)
		if err != nil || size < 0 || size > int64(len(b)) {
			break
		}
		if strings.IndexByte("123456", blk[156]) >= 0 {
			size = 0 // links, devices, directories and FIFOs have no data
		}
		off += 512 + int((size+511)/512)*512
	}
	return b
}

// linkMark ends fuzzTree's key of a symbolic link: a NUL, which no file name holds, so that a
// regular file whose name ends in "@" (the fuzzer makes them) is not taken for a link.
const linkMark = "\x00@"

// fuzzTree lists dir: regular files as path -> content, directories as "path/" -> ""
// and symbolic links as "path"+linkMark -> target. It fails on other file types and on files
// not 0600 or directories not 0700.
func fuzzTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel := filepath.ToSlash(p[len(dir)+1:])
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got[rel+linkMark] = target
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
			t.Errorf("%s is a %v, want only files, directories and the planted links", rel, fi.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func fuzzMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func fuzzFetch(b []byte) func(context.Context, []string) (io.ReadCloser, error) {
	return func(context.Context, []string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

// fuzzDiff lists the differences between two trees of fuzzTree.
func fuzzDiff(got, want map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			fmt.Fprintf(&b, "%s = %q (present: %v), want %q\n", k, g, ok, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "unexpected %s = %q\n", k, got[k])
		}
	}
	return b.String()
}

// FuzzSyncArchive gives Mirror.Sync an arbitrary archive, as a hostile or broken
// podshim could send, into a copy holding symbolic links to files and directories
// outside it, three levels below a directory that also holds an "outside" directory.
// Sync must never panic and nothing outside the copy may change; an archive with a
// link, device, directory or other non-regular entry, or with an absolute or ".."
// name, or that cannot be read to its end, must fail the Sync; the copy holds only
// 0600 files, 0700 directories and the planted links, every file's content is that of
// an archive entry of its path, and after a Sync without error exactly the archive's
// files (last entry wins) are there. A second Sync of an empty archive then removes
// every file the first one wrote.
func FuzzSyncArchive(f *testing.F) {
	big := strings.Repeat("x", fuzzMaxBytes+1)
	for _, seed := range [][]fuzzEntry{
		{fuzzReg("0/a", "A"), fuzzReg("0/sub/dir/b", "B"), fuzzReg("1/c", "C"), fuzzReg("2/x", "X"), fuzzReg("0/nested/y", "Y")},
		{fuzzReg("1", "etc/config is a single file"), fuzzReg("0/a", "A")},
		{fuzzReg("0/a", "first"), fuzzReg("0/a", "second")},
		{fuzzReg("0/.tp-skipped", "more than 10485760 bytes\n"), fuzzReg("1/.tp-errors", "/etc/config/x: permission denied\n"), fuzzReg("1/ok", "fine")},
		{fuzzReg("0/key", "replaces the link to victim"), fuzzReg("0/dangling", "replaces the dangling link")},
		{fuzzReg("0/lnk/evil", "through a link to a directory outside")},
		{fuzzReg("0/up/evil", "through a relative link")},
		{fuzzReg("0/a", "A"), fuzzReg("0/a/b", "file then directory")},
		{fuzzReg("0/a/b", "directory then file"), fuzzReg("0/a", "A")},
		{fuzzReg("0/ok", "fine"), fuzzReg("../escape", "pwned")},
		{fuzzReg("0/../../../../outside/victim", "pwned")},
		{fuzzReg("/abs", "pwned")},
		{fuzzReg("0/./x", "x"), fuzzReg("0//x", "x"), fuzzReg("00/x", "x"), fuzzReg("3/x", "x")},
		{fuzzReg("0/ok", "fine"), {hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "0/link", Linkname: "/etc/passwd"}}},
		{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "0/rel", Linkname: "../../../../outside"}}, fuzzReg("0/rel/victim", "pwned")},
		{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "0/hard", Linkname: "0/key"}}},
		{{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "0/d/"}}, fuzzReg("0/d/f", "F")},
		{{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "0/fifo"}}},
		{fuzzReg("0/big", big)},
		{fuzzReg("0/"+strings.Repeat("long/", 30)+"name", "PAX or GNU long name")},
		{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "0/pax", Size: 1, Format: tar.FormatPAX, PAXRecords: map[string]string{"path": "0/renamed"}}, body: "p"}},
		{},
	} {
		f.Add(fuzzTar(f, seed...))
	}
	truncated := fuzzTar(f, fuzzReg("0/a", "A"), fuzzReg("0/b", strings.Repeat("b", 1000)))
	f.Add(truncated[:1200])
	f.Add([]byte("not a tar archive"))
	empty := fuzzTar(f)

	// One directory per fuzzing process; each input gets a new copy below it.
	base := f.TempDir()
	outside := filepath.Join(base, "outside")
	cell := filepath.Join(base, "jail", "cell")
	for _, err := range []error{
		os.MkdirAll(filepath.Join(outside, "dir"), 0o700),
		os.WriteFile(filepath.Join(outside, "victim"), []byte("original"), 0o600),
		os.MkdirAll(cell, 0o700),
		os.Chmod(base, 0o700),
	} {
		if err != nil {
			f.Fatal(err)
		}
	}
	planted := map[string]string{
		"vol/key@":      filepath.Join(outside, "victim"),
		"vol/lnk@":      filepath.Join(outside, "dir"),
		"vol/dangling@": filepath.Join(outside, "created"),
		"vol/up@":       "../../../../outside",
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		root := filepath.Join(cell, "root")
		fuzzMust(t, os.MkdirAll(filepath.Join(root, "vol"), 0o700))
		t.Cleanup(func() { os.RemoveAll(root) })
		for _, name := range slices.Sorted(maps.Keys(planted)) {
			fuzzMust(t, os.Symlink(planted[name], filepath.Join(root, strings.TrimSuffix(name, "@"))))
		}
		checkOutside := func(when string) {
			t.Helper()
			want := map[string]string{"outside/": "", "outside/victim": "original", "outside/dir/": "", "jail/": "", "jail/cell/": ""}
			got := map[string]string{}
			for k, v := range fuzzTree(t, base) {
				if !strings.HasPrefix(k, "jail/cell/root") {
					got[k] = v
				}
			}
			if d := fuzzDiff(got, want); d != "" {
				t.Fatalf("%s: outside the copy changed:\n%s", when, d)
			}
		}
		// checkCopy checks the copy; want, when not nil, is the exact set of files.
		checkCopy := func(when string, bodies map[string][]string, want map[string]string) {
			t.Helper()
			for name, content := range fuzzTree(t, root) {
				switch {
				case strings.HasSuffix(name, "/"):
				case strings.HasSuffix(name, linkMark):
					if planted[strings.TrimSuffix(name, linkMark)+"@"] != content {
						t.Fatalf("%s: symbolic link %s -> %s, not one planted", when, name, content)
					}
				case want != nil:
					if w, ok := want[name]; !ok || w != content {
						t.Fatalf("%s: %s = %q, want %q (present: %v)", when, name, content, w, ok)
					}
					delete(want, name)
				case !slices.Contains(bodies[name], content):
					t.Fatalf("%s: %s = %q, not the body of an entry of its path %q", when, name, content, bodies[name])
				}
			}
			for name := range want {
				t.Fatalf("%s: %s is missing", when, name)
			}
		}

		data = fuzzFixChecksums(data)
		m := &volumes.Mirror{Root: root, Mounts: fuzzMounts, MaxBytes: fuzzMaxBytes, Fetch: fuzzFetch(data)}
		err := m.Sync(context.Background())
		bodies, hostile, readable := fuzzScan(data)
		checkOutside("after Sync")
		if hostile && err == nil {
			t.Fatal("Sync accepted an archive with a non-regular entry or an absolute or .. name")
		}
		if !readable && err == nil {
			t.Fatal("Sync accepted an archive that cannot be read to its end")
		}
		var want map[string]string
		if err == nil {
			want = map[string]string{}
			for name, b := range bodies {
				want[name] = b[len(b)-1]
			}
		}
		checkCopy("after Sync", bodies, want)

		m.Fetch = fuzzFetch(empty)
		err = m.Sync(context.Background())
		checkOutside("after a second Sync of an empty archive")
		if err == nil {
			checkCopy("after a second Sync of an empty archive", nil, map[string]string{})
		} else {
			checkCopy("after a second Sync of an empty archive", bodies, nil)
		}
	})
}
