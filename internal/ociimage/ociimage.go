// Package ociimage builds a FROM-scratch container image out of files on the host and
// writes it as an OCI image-layout tarball (oci-layout, index.json, blobs/sha256/…) that
// `ctr -n k8s.io images import` registers under the image's reference, so e2e tests can
// run our own static binaries on a cluster that reaches no registry.
//
// The image has a single gzip layer holding the given files, their parent directories
// (0755), a /tmp directory (1777) and an /etc/passwd and /etc/group naming root and
// nonroot (65532). Every entry is owned by 0:0 and dated at the Unix epoch, so the same
// inputs always give the same digests. With several platforms the result is an image
// index with one manifest per platform.
//
// It leaves out: base images, more than one layer, symlinks, hard links and device
// nodes, labels, exposed ports, volumes, a working directory, compression other than
// gzip, signing, and pushing to a registry.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// DefaultPlatform is the platform built when Options.Platforms is empty.
	DefaultPlatform = "linux/amd64"

	// ArchPlaceholder in a File's Src is replaced by the architecture of the platform
	// being built (for example "amd64" or "arm64").
	ArchPlaceholder = "{arch}"

	// DefaultFileMode is the mode given to a File whose Mode is zero.
	DefaultFileMode os.FileMode = 0o755

	// AnnotationRefName is the OCI annotation that names an image in index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"

	// AnnotationImageName is the annotation containerd's importer reads first for the
	// name it registers an image under.
	AnnotationImageName = "io.containerd.image.name"

	// NonrootUID is the uid (and gid) of the "nonroot" user in the image's /etc/passwd.
	NonrootUID = 65532
)

// passwd and group are the /etc/passwd and /etc/group every image gets.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nonroot:x:65532:\n"
)

// epoch is the fixed time stamp of every tar entry, the config and its history.
var epoch = time.Unix(0, 0).UTC()

// File is one host file copied into the image.
type File struct {
	// Src is the path of the file on the host; ArchPlaceholder in it is replaced per platform.
	Src string
	// Dst is the absolute path of the file in the image, for example "/podshim".
	Dst string
	// Mode holds the permission bits (and optionally setuid, setgid, sticky); zero means DefaultFileMode.
	Mode os.FileMode
}

// Options describe the image Build writes.
type Options struct {
	// Ref is the image reference, for example "ghcr.io/kubectl-tp/podshim:v0.1.0"; it is
	// normalized with NormalizeRef before use.
	Ref string
	// Files are copied into the image's single layer.
	Files []File
	// Entrypoint is the image's entrypoint.
	Entrypoint []string
	// Cmd is the image's default arguments.
	Cmd []string
	// User is the user the image runs as, for example "65532:65532"; empty means root.
	User string
	// Env holds KEY=VALUE entries of the image's environment.
	Env []string
	// Platforms are "os/arch[/variant]" strings; empty means DefaultPlatform.
	Platforms []string
	// Out is the path of the tarball to write; it is replaced atomically.
	Out string
}

// Description tells what an image-layout tarball written by Build holds.
type Description struct {
	// Ref is the image name from the index.json descriptor's annotations.
	Ref string
	// Digest is the digest of the top-level manifest or image index.
	Digest string
	// MediaType is the media type of the top-level manifest or image index.
	MediaType string
}

// Build writes the image described by opts as an OCI image-layout tarball at opts.Out.
func Build(opts Options) error {
	ref, err := NormalizeRef(opts.Ref)
	if err != nil {
		return err
	}
	if opts.Out == "" {
		return errors.New("ociimage: no output path given")
	}
	platforms, err := parsePlatforms(opts.Platforms)
	if err != nil {
		return err
	}
	if err := checkFiles(opts.Files); err != nil {
		return err
	}
	for _, e := range opts.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("ociimage: env entry %q is not KEY=VALUE", e)
		}
	}

	var images []v1.Image
	for _, p := range platforms {
		img, err := buildImage(opts, p)
		if err != nil {
			return err
		}
		images = append(images, img)
	}

	dir, err := os.MkdirTemp("", "ociimage-layout-")
	if err != nil {
		return fmt.Errorf("ociimage: create temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)

	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("ociimage: write image layout: %w", err)
	}
	top, err := writeImages(lp, images, platforms)
	if err != nil {
		return fmt.Errorf("ociimage: write image layout: %w", err)
	}
	top.Annotations = map[string]string{
		AnnotationRefName:   ref,
		AnnotationImageName: ref,
	}
	if err := lp.AppendDescriptor(top); err != nil {
		return fmt.Errorf("ociimage: write image layout: %w", err)
	}
	return tarDir(dir, opts.Out)
}

// writeImages writes the images' blobs into the layout and returns the descriptor of
// the single image, or of an image index of them all when there are several.
// Descriptors carry no artifactType: these are images, not artifacts.
func writeImages(lp layout.Path, images []v1.Image, platforms []v1.Platform) (v1.Descriptor, error) {
	descs := make([]v1.Descriptor, len(images))
	for i, img := range images {
		if err := lp.WriteImage(img); err != nil {
			return v1.Descriptor{}, err
		}
		d, err := partial.Descriptor(img)
		if err != nil {
			return v1.Descriptor{}, err
		}
		d.ArtifactType = ""
		d.Platform = &platforms[i]
		descs[i] = *d
	}
	if len(descs) == 1 {
		descs[0].Platform = nil
		return descs[0], nil
	}
	raw, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     descs,
	})
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	if err := lp.WriteBlob(h, io.NopCloser(bytes.NewReader(raw))); err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: types.OCIImageIndex, Size: size, Digest: h}, nil
}

// NormalizeRef returns ref the way containerd's CRI plugin names images: a missing
// registry becomes docker.io (with library/ for a single-component name) and a missing
// tag becomes :latest, so kubelet finds an imported image under the name a pod spec
// uses. A fully qualified reference is returned unchanged.
func NormalizeRef(ref string) (string, error) {
	if ref == "" {
		return "", errors.New("ociimage: no image reference given")
	}
	rest, digest, hasDigest := strings.Cut(ref, "@")
	repo, tag := rest, ""
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		repo, tag = rest[:i], rest[i+1:]
	}
	first, _, hasSlash := strings.Cut(repo, "/")
	switch {
	case !hasSlash:
		repo = "docker.io/library/" + repo
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		repo = "docker.io/" + repo
	}
	out := repo
	switch {
	case tag != "":
		out += ":" + tag
	case !hasDigest:
		out += ":latest"
	}
	if hasDigest {
		out += "@" + digest
	}
	if _, err := name.ParseReference(out, name.StrictValidation); err != nil {
		return "", fmt.Errorf("ociimage: invalid image reference %q: %v", ref, err)
	}
	return out, nil
}

// ParseFileSpec parses a "SRC:DST[:MODE]" command-line argument, MODE being octal
// permission bits no greater than 0777 (DefaultFileMode when absent).
func ParseFileSpec(spec string) (File, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return File{}, fmt.Errorf("ociimage: file %q is not SRC:DST[:MODE]", spec)
	}
	f := File{Src: parts[0], Dst: parts[1], Mode: DefaultFileMode}
	if len(parts) == 3 {
		m, err := strconv.ParseUint(parts[2], 8, 32)
		if err != nil || m > 0o777 {
			return File{}, fmt.Errorf("ociimage: mode %q of %q is not octal between 0 and 0777", parts[2], spec)
		}
		f.Mode = os.FileMode(m)
	}
	return f, nil
}

// Describe reads the index.json of an image-layout tarball written by Build and
// returns its single top-level descriptor.
func Describe(tarPath string) (Description, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return Description{}, fmt.Errorf("ociimage: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return Description{}, fmt.Errorf("ociimage: %s has no index.json", tarPath)
		}
		if err != nil {
			return Description{}, fmt.Errorf("ociimage: read %s: %w", tarPath, err)
		}
		if path.Clean(h.Name) != "index.json" {
			continue
		}
		var idx v1.IndexManifest
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return Description{}, fmt.Errorf("ociimage: parse index.json of %s: %w", tarPath, err)
		}
		if len(idx.Manifests) != 1 {
			return Description{}, fmt.Errorf("ociimage: index.json of %s has %d descriptors, want 1", tarPath, len(idx.Manifests))
		}
		d := idx.Manifests[0]
		return Description{
			Ref:       d.Annotations[AnnotationImageName],
			Digest:    d.Digest.String(),
			MediaType: string(d.MediaType),
		}, nil
	}
}

// parsePlatforms parses the platform strings, defaulting to DefaultPlatform.
func parsePlatforms(specs []string) ([]v1.Platform, error) {
	if len(specs) == 0 {
		specs = []string{DefaultPlatform}
	}
	seen := map[string]bool{}
	var out []v1.Platform
	for _, s := range specs {
		p, err := v1.ParsePlatform(s)
		if err != nil || p.OS == "" || p.Architecture == "" || p.OSVersion != "" {
			return nil, fmt.Errorf("ociimage: platform %q is not os/arch[/variant]", s)
		}
		if seen[p.String()] {
			return nil, fmt.Errorf("ociimage: platform %q given twice", s)
		}
		seen[p.String()] = true
		out = append(out, *p)
	}
	return out, nil
}

// checkFiles validates the files' destinations and modes without touching the host.
func checkFiles(files []File) error {
	seen := map[string]bool{}
	for _, f := range files {
		if f.Src == "" {
			return fmt.Errorf("ociimage: file for %q has no source path", f.Dst)
		}
		if !path.IsAbs(f.Dst) || path.Clean(f.Dst) != f.Dst || f.Dst == "/" {
			return fmt.Errorf("ociimage: destination %q is not a clean absolute file path", f.Dst)
		}
		if f.Mode&^(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
			return fmt.Errorf("ociimage: mode %v of %q is not a plain file mode", f.Mode, f.Dst)
		}
		if f.Dst == "/tmp" || f.Dst == "/etc" {
			return fmt.Errorf("ociimage: destination %q is a directory of the image", f.Dst)
		}
		if seen[f.Dst] {
			return fmt.Errorf("ociimage: destination %q given twice", f.Dst)
		}
		seen[f.Dst] = true
	}
	for _, f := range files {
		for d := path.Dir(f.Dst); d != "/"; d = path.Dir(d) {
			if seen[d] {
				return fmt.Errorf("ociimage: destination %q is also the parent directory of %q", d, f.Dst)
			}
		}
	}
	return nil
}

// buildImage makes the image for one platform.
func buildImage(opts Options, p v1.Platform) (v1.Image, error) {
	layerData, err := buildLayer(opts.Files, p.Architecture)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerData)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("ociimage: make layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		Created:      v1.Time{Time: epoch},
		Config: v1.Config{
			Entrypoint: opts.Entrypoint,
			Cmd:        opts.Cmd,
			User:       opts.User,
			Env:        opts.Env,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("ociimage: set image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "kubectl-tp ociimage"},
	})
	if err != nil {
		return nil, fmt.Errorf("ociimage: add layer: %w", err)
	}
	return img, nil
}

// entry is one tar entry of the layer: a directory, or a file with inline data or a host source.
type entry struct {
	mode os.FileMode
	dir  bool
	data string
	src  string
}

// buildLayer returns the gzip-compressed tar of the image's single layer for arch.
func buildLayer(files []File, arch string) ([]byte, error) {
	entries := map[string]entry{
		"etc":        {mode: 0o755, dir: true},
		"tmp":        {mode: 0o777 | os.ModeSticky, dir: true},
		"etc/passwd": {mode: 0o644, data: passwd},
		"etc/group":  {mode: 0o644, data: group},
	}
	for _, f := range files {
		dst := strings.TrimPrefix(f.Dst, "/")
		for d := path.Dir(dst); d != "."; d = path.Dir(d) {
			if e, ok := entries[d]; !ok {
				entries[d] = entry{mode: 0o755, dir: true}
			} else if !e.dir {
				return nil, fmt.Errorf("ociimage: destination %q is under the file /%s", f.Dst, d)
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = DefaultFileMode
		}
		entries[dst] = entry{mode: mode, src: strings.ReplaceAll(f.Src, ArchPlaceholder, arch)}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("ociimage: start gzip: %w", err)
	}
	tw := tar.NewWriter(zw)
	for _, n := range names {
		if err := writeEntry(tw, n, entries[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("ociimage: finish layer tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("ociimage: finish layer gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// writeEntry writes one layer entry, copying a host file's contents when it has one.
func writeEntry(tw *tar.Writer, name string, e entry) error {
	h := &tar.Header{Name: name, Mode: tarMode(e.mode), ModTime: epoch}
	if e.dir {
		h.Typeflag = tar.TypeDir
		h.Name += "/"
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("ociimage: write layer entry %s: %w", name, err)
		}
		return nil
	}
	h.Typeflag = tar.TypeReg
	if e.src == "" {
		h.Size = int64(len(e.data))
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("ociimage: write layer entry %s: %w", name, err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			return fmt.Errorf("ociimage: write layer entry %s: %w", name, err)
		}
		return nil
	}
	f, err := os.Open(e.src)
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("ociimage: source %s is not a regular file", e.src)
	}
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("ociimage: write layer entry %s: %w", name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("ociimage: copy %s into layer: %w", e.src, err)
	}
	return nil
}

// tarMode converts an os.FileMode to the Unix mode bits of a tar header.
func tarMode(m os.FileMode) int64 {
	mode := int64(m.Perm())
	if m&os.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// tarDir writes the image layout in dir as a deterministic tarball at out, replacing
// out atomically.
func tarDir(dir, out string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return fmt.Errorf("ociimage: read image layout: %w", err)
	}
	sort.Strings(names)

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return fmt.Errorf("ociimage: create %s: %w", out, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	tw := tar.NewWriter(tmp)
	for _, n := range names {
		if err := addLayoutFile(tw, filepath.Join(dir, filepath.FromSlash(n)), n); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("ociimage: write %s: %w", out, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("ociimage: write %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("ociimage: write %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("ociimage: write %s: %w", out, err)
	}
	return nil
}

// addLayoutFile adds one file or directory of the image layout to the outer tarball.
func addLayoutFile(tw *tar.Writer, p, name string) error {
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("ociimage: read image layout: %w", err)
	}
	h := &tar.Header{Name: name, Mode: 0o644, ModTime: epoch, Typeflag: tar.TypeReg}
	if st.IsDir() {
		h.Name += "/"
		h.Mode = 0o755
		h.Typeflag = tar.TypeDir
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("ociimage: write %s: %w", name, err)
		}
		return nil
	}
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("ociimage: write %s: %w", name, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("ociimage: read image layout: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("ociimage: write %s: %w", name, err)
	}
	return nil
}
