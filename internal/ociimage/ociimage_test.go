package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// unpacked is an image-layout tarball read into memory.
type unpacked struct {
	files map[string][]byte
	dirs  map[string]bool
}

// untar reads a tarball written by Build.
func untar(t *testing.T, p string) unpacked {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unpacked{files: map[string][]byte{}, dirs: map[string]bool{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return u
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeDir {
			u.dirs[strings.TrimSuffix(h.Name, "/")] = true
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		u.files[h.Name] = b
	}
}

// descriptor is the subset of an OCI descriptor the tests look at.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

// blob returns the blob a descriptor points at.
func (u unpacked) blob(t *testing.T, d descriptor) []byte {
	t.Helper()
	b, ok := u.files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", d.Digest)
	}
	return b
}

// index parses index.json and returns its single descriptor.
func (u unpacked) index(t *testing.T) descriptor {
	t.Helper()
	var idx struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(u.files["index.json"], &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json has %d descriptors, want 1", len(idx.Manifests))
	}
	return idx.Manifests[0]
}

// image is what a test checks in one platform's image.
type image struct {
	manifest struct {
		MediaType string       `json:"mediaType"`
		Config    descriptor   `json:"config"`
		Layers    []descriptor `json:"layers"`
	}
	config struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Created      string `json:"created"`
		Config       struct {
			Entrypoint []string `json:"Entrypoint"`
			Cmd        []string `json:"Cmd"`
			User       string   `json:"User"`
			Env        []string `json:"Env"`
		} `json:"config"`
	}
	layer map[string]*tar.Header
	data  map[string][]byte
}

// readImage reads the manifest, config and layer a manifest descriptor points at.
func (u unpacked) readImage(t *testing.T, d descriptor) image {
	t.Helper()
	var img image
	if err := json.Unmarshal(u.blob(t, d), &img.manifest); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(u.blob(t, img.manifest.Config), &img.config); err != nil {
		t.Fatal(err)
	}
	if len(img.manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(img.manifest.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(u.blob(t, img.manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	img.layer, img.data = map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		img.layer[name] = h
		if img.data[name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// writeFile writes a temporary host file and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildSinglePlatform(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, dir, "bin", "#!binary")
	conf := writeFile(t, dir, "conf", "key=value\n")
	const ref = "ghcr.io/kubectl-tp/podshim:v0.1.0"
	out := filepath.Join(dir, "img.tar")
	err := Build(Options{
		Ref: ref,
		Files: []File{
			{Src: src, Dst: "/usr/local/bin/podshim", Mode: 0o755},
			{Src: conf, Dst: "/etc/podshim.conf", Mode: 0o640},
			{Src: conf, Dst: "/tmp/seed"},
		},
		Entrypoint: []string{"/usr/local/bin/podshim"},
		Cmd:        []string{"-v"},
		User:       "65532:65532",
		Env:        []string{"A=1"},
		Out:        out,
	})
	if err != nil {
		t.Fatal(err)
	}
	u := untar(t, out)
	if _, ok := u.files["oci-layout"]; !ok {
		t.Fatal("oci-layout missing")
	}
	if !u.dirs["blobs/sha256"] {
		t.Error("blobs/sha256 directory entry missing")
	}
	d := u.index(t)
	if d.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("index.json media type = %q", d.MediaType)
	}
	for _, k := range []string{AnnotationRefName, AnnotationImageName} {
		if d.Annotations[k] != ref {
			t.Errorf("annotation %s = %q, want %q", k, d.Annotations[k], ref)
		}
	}
	img := u.readImage(t, d)
	if img.manifest.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest media type = %q", img.manifest.MediaType)
	}
	if img.manifest.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("config media type = %q", img.manifest.Config.MediaType)
	}
	if img.manifest.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("layer media type = %q", img.manifest.Layers[0].MediaType)
	}
	c := img.config
	if c.OS != "linux" || c.Architecture != "amd64" || c.Created != "1970-01-01T00:00:00Z" {
		t.Errorf("config os/arch/created = %s/%s/%s", c.OS, c.Architecture, c.Created)
	}
	if !reflect.DeepEqual(c.Config.Entrypoint, []string{"/usr/local/bin/podshim"}) ||
		!reflect.DeepEqual(c.Config.Cmd, []string{"-v"}) ||
		c.Config.User != "65532:65532" || !reflect.DeepEqual(c.Config.Env, []string{"A=1"}) {
		t.Errorf("config = %+v", c.Config)
	}

	tests := []struct {
		name    string
		mode    os.FileMode
		dir     bool
		content string
	}{
		{name: "usr", mode: 0o755, dir: true},
		{name: "usr/local", mode: 0o755, dir: true},
		{name: "usr/local/bin", mode: 0o755, dir: true},
		{name: "usr/local/bin/podshim", mode: 0o755, content: "#!binary"},
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/podshim.conf", mode: 0o640, content: "key=value\n"},
		{name: "etc/passwd", mode: 0o644, content: passwd},
		{name: "etc/group", mode: 0o644, content: group},
		{name: "tmp", mode: 0o777 | os.ModeSticky, dir: true},
		{name: "tmp/seed", mode: DefaultFileMode, content: "key=value\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok := img.layer[tt.name]
			if !ok {
				t.Fatalf("layer has no %s", tt.name)
			}
			fi := h.FileInfo()
			if got := fi.Mode() &^ os.ModeDir; got != tt.mode {
				t.Errorf("mode = %v, want %v", got, tt.mode)
			}
			if fi.IsDir() != tt.dir {
				t.Errorf("is dir = %v, want %v", fi.IsDir(), tt.dir)
			}
			if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 0 {
				t.Errorf("owner %d:%d mtime %v, want 0:0 at epoch", h.Uid, h.Gid, h.ModTime)
			}
			if got := string(img.data[tt.name]); got != tt.content {
				t.Errorf("content = %q, want %q", got, tt.content)
			}
		})
	}
	if len(img.layer) != len(tests) {
		t.Errorf("layer has %d entries, want %d", len(img.layer), len(tests))
	}
	if !strings.Contains(passwd, "nonroot:x:65532:65532:") || !strings.Contains(group, "nonroot:x:65532:") {
		t.Error("passwd or group lacks the nonroot user")
	}

	desc, err := Describe(out)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Ref != ref || desc.Digest != d.Digest || desc.MediaType != d.MediaType {
		t.Errorf("Describe = %+v, index.json descriptor = %+v", desc, d)
	}
}

func TestBuildDeterministic(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, dir, "bin", "same bytes")
	build := func(out string, platforms ...string) string {
		t.Helper()
		err := Build(Options{
			Ref:       "example.com/a/b:c",
			Files:     []File{{Src: src, Dst: "/b"}},
			Platforms: platforms,
			Out:       filepath.Join(dir, out),
		})
		if err != nil {
			t.Fatal(err)
		}
		d, err := Describe(filepath.Join(dir, out))
		if err != nil {
			t.Fatal(err)
		}
		return d.Digest
	}
	tests := []struct {
		name      string
		platforms []string
	}{
		{name: "single", platforms: nil},
		{name: "multi", platforms: []string{"linux/amd64", "linux/arm64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := build(tt.name+"1.tar", tt.platforms...)
			if err := os.Chtimes(src, time1, time1); err != nil {
				t.Fatal(err)
			}
			second := build(tt.name+"2.tar", tt.platforms...)
			if first != second {
				t.Errorf("digests differ: %s vs %s", first, second)
			}
			a, _ := os.ReadFile(filepath.Join(dir, tt.name+"1.tar"))
			b, _ := os.ReadFile(filepath.Join(dir, tt.name+"2.tar"))
			if !bytes.Equal(a, b) {
				t.Error("tarballs differ")
			}
		})
	}
	if err := os.WriteFile(src, []byte("other bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if build("changed.tar") == digestOf(t, filepath.Join(dir, "single1.tar")) {
		t.Error("changing the file did not change the digest")
	}
}

// time1 is a modification time that must not leak into the image.
var time1 = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

// digestOf returns the top-level digest of a tarball.
func digestOf(t *testing.T, p string) string {
	t.Helper()
	d, err := Describe(p)
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest
}

func TestBuildMultiPlatform(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "bin-amd64", "amd64 binary")
	writeFile(t, dir, "bin-arm64", "arm64 binary")
	const ref = "ghcr.io/kubectl-tp/podshim:v0.1.0"
	out := filepath.Join(dir, "multi.tar")
	err := Build(Options{
		Ref:        ref,
		Files:      []File{{Src: filepath.Join(dir, "bin-{arch}"), Dst: "/podshim", Mode: 0o755}},
		Entrypoint: []string{"/podshim"},
		Platforms:  []string{"linux/amd64", "linux/arm64"},
		Out:        out,
	})
	if err != nil {
		t.Fatal(err)
	}
	u := untar(t, out)
	d := u.index(t)
	if d.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("index.json media type = %q", d.MediaType)
	}
	for _, k := range []string{AnnotationRefName, AnnotationImageName} {
		if d.Annotations[k] != ref {
			t.Errorf("annotation %s = %q, want %q", k, d.Annotations[k], ref)
		}
	}
	var idx struct {
		MediaType string       `json:"mediaType"`
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(u.blob(t, d), &idx); err != nil {
		t.Fatal(err)
	}
	if idx.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("image index media type = %q", idx.MediaType)
	}
	want := []struct{ arch, content string }{
		{"amd64", "amd64 binary"},
		{"arm64", "arm64 binary"},
	}
	if len(idx.Manifests) != len(want) {
		t.Fatalf("image index has %d manifests, want %d", len(idx.Manifests), len(want))
	}
	for i, w := range want {
		t.Run(w.arch, func(t *testing.T) {
			m := idx.Manifests[i]
			if m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
				t.Errorf("manifest media type = %q", m.MediaType)
			}
			if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != w.arch {
				t.Errorf("platform = %+v, want linux/%s", m.Platform, w.arch)
			}
			img := u.readImage(t, m)
			if img.config.Architecture != w.arch {
				t.Errorf("config architecture = %q", img.config.Architecture)
			}
			if got := string(img.data["podshim"]); got != w.content {
				t.Errorf("/podshim = %q, want %q", got, w.content)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, dir, "bin", "x")
	out := filepath.Join(dir, "out.tar")
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no ref", Options{Out: out}, "no image reference"},
		{"bad ref", Options{Ref: "Bad Ref", Out: out}, "invalid image reference"},
		{"no out", Options{Ref: "a/b"}, "no output path"},
		{"bad platform", Options{Ref: "a/b", Out: out, Platforms: []string{"linux"}}, "not os/arch"},
		{"duplicate platform", Options{Ref: "a/b", Out: out, Platforms: []string{"linux/amd64", "linux/amd64"}}, "given twice"},
		{"relative dst", Options{Ref: "a/b", Out: out, Files: []File{{Src: src, Dst: "b"}}}, "not a clean absolute"},
		{"root dst", Options{Ref: "a/b", Out: out, Files: []File{{Src: src, Dst: "/"}}}, "not a clean absolute"},
		{"no src", Options{Ref: "a/b", Out: out, Files: []File{{Dst: "/b"}}}, "no source path"},
		{"duplicate dst", Options{Ref: "a/b", Out: out, Files: []File{{Src: src, Dst: "/b"}, {Src: src, Dst: "/b"}}}, "given twice"},
		{"file is dir", Options{Ref: "a/b", Out: out, Files: []File{{Src: src, Dst: "/b"}, {Src: src, Dst: "/b/c"}}}, "parent directory"},
		{"under passwd", Options{Ref: "a/b", Out: out, Files: []File{{Src: src, Dst: "/etc/passwd/x"}}}, "under the file"},
		{"tmp", Options{Ref: "a/b", Out: out, Files: []File{{Src: src, Dst: "/tmp"}}}, "directory of the image"},
		{"bad mode", Options{Ref: "a/b", Out: out, Files: []File{{Src: src, Dst: "/b", Mode: os.ModeSymlink}}}, "not a plain file mode"},
		{"missing src", Options{Ref: "a/b", Out: out, Files: []File{{Src: filepath.Join(dir, "nope"), Dst: "/b"}}}, "no such file"},
		{"dir src", Options{Ref: "a/b", Out: out, Files: []File{{Src: dir, Dst: "/b"}}}, "not a regular file"},
		{"bad env", Options{Ref: "a/b", Out: out, Env: []string{"NOEQUALS"}}, "not KEY=VALUE"},
		{"out dir missing", Options{Ref: "a/b", Out: filepath.Join(dir, "nope", "x.tar")}, "create"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Build(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if _, statErr := os.Stat(out); !os.IsNotExist(statErr) {
				t.Errorf("failed build left %s behind", out)
			}
		})
	}
}

func TestNormalizeRef(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "ghcr.io/kubectl-tp/podshim:v0.1.0", want: "ghcr.io/kubectl-tp/podshim:v0.1.0"},
		{in: "testapp:dev", want: "docker.io/library/testapp:dev"},
		{in: "testapp", want: "docker.io/library/testapp:latest"},
		{in: "kubectl-tp/testapp:e2e", want: "docker.io/kubectl-tp/testapp:e2e"},
		{in: "localhost/testapp", want: "localhost/testapp:latest"},
		{in: "localhost:5000/a/b:1", want: "localhost:5000/a/b:1"},
		{in: "registry.k8s.io/pause:3.10", want: "registry.k8s.io/pause:3.10"},
		{
			in:   "example.com/a@sha256:" + strings.Repeat("ab", 32),
			want: "example.com/a@sha256:" + strings.Repeat("ab", 32),
		},
		{in: "", wantErr: true},
		{in: "UPPER/case:x", wantErr: true},
		{in: "a/b:bad:tag", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeRef(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NormalizeRef(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("NormalizeRef(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseFileSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    File
		wantErr bool
	}{
		{in: "bin/podshim:/podshim", want: File{Src: "bin/podshim", Dst: "/podshim", Mode: 0o755}},
		{in: "a:/etc/a.conf:0644", want: File{Src: "a", Dst: "/etc/a.conf", Mode: 0o644}},
		{in: "a:/b:600", want: File{Src: "a", Dst: "/b", Mode: 0o600}},
		{in: "a", wantErr: true},
		{in: ":/b", wantErr: true},
		{in: "a:", wantErr: true},
		{in: "a:/b:9", wantErr: true},
		{in: "a:/b:1755", wantErr: true},
		{in: "a:/b:0644:x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFileSpec(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFileSpec(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseFileSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}
