package podshim

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Limits of the files operation.
const (
	// MaxFilesBytes caps [tunnel.Request.MaxBytes] (see [tunnel.MaxFilesBytes]).
	MaxFilesBytes = tunnel.MaxFilesBytes
	// MaxFilesPerPath is the most files sent for one path; a path with more is
	// skipped like one over the byte limit.
	MaxFilesPerPath = 10000
	// filesWriteTimeout bounds each write of the archive to a stalled client.
	filesWriteTimeout = 30 * time.Second
	// filesAttempts is how often one path is re-read when a file vanishes between
	// listing and reading it (the kubelet swapping an atomic-writer volume).
	filesAttempts = 3
)

// serveFiles answers an OpFiles request: after the response the stream carries a tar
// archive of the requested paths in the layout described in package tunnel.
//
// For every path P it sends the resolved view of the regular files below P. Top-level
// names starting with ".." (the atomic-writer internals of configMap, secret,
// downwardAPI and projected volumes: "..data" and the timestamped directories) are
// skipped; every other entry is sent under its visible name. Symbolic links are
// followed only when they resolve inside P; others are skipped and counted in the
// path's error entry. Sockets, pipes and devices are skipped silently.
func (s *Server) serveFiles(ctx context.Context, c net.Conn, req *tunnel.Request) {
	if err := validateFilesPaths(req.Paths); err != nil {
		s.reply(c, fail(tunnel.CodeBadRequest, err.Error()))
		return
	}
	if req.MaxBytes < 0 {
		s.reply(c, fail(tunnel.CodeBadRequest, "negative maxBytes"))
		return
	}
	limit := req.MaxBytes
	if limit == 0 {
		limit = tunnel.DefaultFilesMaxBytes
	}
	limit = min(limit, MaxFilesBytes)
	if !s.reply(c, &tunnel.Response{OK: true}) {
		return
	}
	bw := bufio.NewWriterSize(&deadlineWriter{c: c}, 64<<10)
	tw := tar.NewWriter(bw)
	err := func() error {
		for i, p := range req.Paths {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := writePath(tw, i, p, limit); err != nil {
				return err
			}
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return bw.Flush()
	}()
	if err != nil {
		s.logf("%v: files: %v", c.RemoteAddr(), err)
		return
	}
	if cw, ok := c.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
}

// validateFilesPaths checks the paths of an OpFiles request.
func validateFilesPaths(paths []string) error {
	if len(paths) == 0 {
		return errors.New("no paths")
	}
	if len(paths) > tunnel.MaxFilesPaths {
		return fmt.Errorf("%d paths, at most %d allowed", len(paths), tunnel.MaxFilesPaths)
	}
	for _, p := range paths {
		switch {
		case !filepath.IsAbs(p):
			return fmt.Errorf("path %q is not absolute", p)
		case filepath.Clean(p) != p:
			return fmt.Errorf("path %q is not clean", p)
		case p == "/":
			return errors.New(`path "/" is not allowed`)
		case strings.ContainsRune(p, 0):
			return fmt.Errorf("path %q contains a NUL byte", p)
		}
		for _, part := range strings.Split(p, "/") {
			if part == ".." {
				return fmt.Errorf("path %q contains ..", p)
			}
		}
	}
	return nil
}

// deadlineWriter writes to c with a fresh write deadline for every write.
type deadlineWriter struct{ c net.Conn }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(time.Now().Add(filesWriteTimeout))
	return w.c.Write(p)
}

// maxErrorLines bounds the lines of one path's error entry.
const maxErrorLines = 100

// writePath writes the entries of path p (index i) to tw.
func writePath(tw *tar.Writer, i int, p string, limit int64) error {
	var pf *pathFiles
	for attempt := 1; ; attempt++ {
		pf = collect(p, limit)
		if !pf.vanished || attempt == filesAttempts {
			break
		}
	}
	prefix := fmt.Sprint(i)
	if pf.skipped != "" {
		return writeEntry(tw, prefix+"/"+tunnel.FilesSkippedName, 0o644, []byte(pf.skipped+"\n"))
	}
	for _, f := range pf.files {
		name := prefix
		if f.name != "" {
			name += "/" + f.name
		}
		if err := writeEntry(tw, name, f.perm, f.data); err != nil {
			return err
		}
	}
	errs := pf.errs
	if len(errs) > maxErrorLines {
		errs = append(errs[:maxErrorLines:maxErrorLines], fmt.Sprintf("and %d more errors", len(pf.errs)-maxErrorLines))
	}
	if pf.outside > 0 {
		errs = append(errs, fmt.Sprintf("%d symbolic link(s) pointing outside %s skipped", pf.outside, p))
	}
	if len(errs) > 0 {
		return writeEntry(tw, prefix+"/"+tunnel.FilesErrorsName, 0o644, []byte(strings.Join(errs, "\n")+"\n"))
	}
	return nil
}

func writeEntry(tw *tar.Writer, name string, perm fs.FileMode, data []byte) error {
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     int64(perm.Perm()),
		Size:     int64(len(data)),
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// pathFiles is what is sent for one requested path.
type pathFiles struct {
	files    []fileData
	skipped  string   // reason the path is skipped; files is then empty
	errs     []string // files that could not be listed or read, and why
	outside  int      // symbolic links pointing outside the path
	vanished bool     // a listed file disappeared before it was read
}

// fileData is one regular file; name is slash-separated and relative to the path
// ("" when the path itself is a file).
type fileData struct {
	name string
	perm fs.FileMode
	data []byte
}

// listed is a regular file found by the walk; real is its symlink-free path.
type listed struct {
	name string
	real string
	perm fs.FileMode
	size int64
}

// walker lists the regular files below a resolved root.
type walker struct {
	p       string // the requested path
	root    string // p with symbolic links resolved
	limit   int64
	files   []listed
	total   int64
	over    bool
	visited map[string]bool
	errs    []string
	outside int
}

// collect lists and reads the files of path p within limit bytes.
func collect(p string, limit int64) *pathFiles {
	root, err := filepath.EvalSymlinks(p)
	if err != nil {
		return &pathFiles{errs: []string{fmt.Sprintf("%s: %v", p, pathErr(err))}}
	}
	fi, err := os.Stat(root)
	if err != nil {
		return &pathFiles{errs: []string{fmt.Sprintf("%s: %v", p, pathErr(err))}}
	}
	w := &walker{p: p, root: root, limit: limit, visited: map[string]bool{root: true}}
	switch {
	case fi.Mode().IsRegular():
		w.add("", root, fi)
	case fi.IsDir():
		w.walk(root, "", true)
	default:
		return &pathFiles{errs: []string{p + ": neither a directory nor a regular file"}}
	}
	if w.over {
		return &pathFiles{skipped: overReason(w.total, limit, len(w.files))}
	}
	pf := &pathFiles{errs: w.errs, outside: w.outside}
	left := limit
	for _, l := range w.files {
		data, err := readRegular(l.real, left)
		switch {
		case errors.Is(err, errTooLarge):
			return &pathFiles{skipped: overReason(limit+1, limit, len(w.files))}
		case err != nil:
			pf.vanished = pf.vanished || errors.Is(err, fs.ErrNotExist)
			pf.errs = append(pf.errs, fmt.Sprintf("%s: %v", w.display(l.name), pathErr(err)))
			continue
		}
		left -= int64(len(data))
		pf.files = append(pf.files, fileData{name: l.name, perm: l.perm, data: data})
	}
	return pf
}

// display names a file in an error line: its visible name, or the path itself.
func (w *walker) display(name string) string {
	if name == "" {
		return w.p
	}
	return name
}

// walk lists directory dir (symlink-free) whose visible name is vis.
func (w *walker) walk(dir, vis string, top bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		w.errs = append(w.errs, fmt.Sprintf("%s: %v", w.display(vis), pathErr(err)))
	}
	for _, e := range entries {
		if w.over {
			return
		}
		name := e.Name()
		if top && strings.HasPrefix(name, "..") {
			continue
		}
		if top && (name == tunnel.FilesSkippedName || name == tunnel.FilesErrorsName) {
			w.errs = append(w.errs, fmt.Sprintf("%s: reserved name, not sent", name))
			continue
		}
		v := path.Join(vis, name)
		real := filepath.Join(dir, name)
		fi, err := os.Lstat(real)
		if err != nil {
			w.errs = append(w.errs, fmt.Sprintf("%s: %v", v, pathErr(err)))
			continue
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(real)
			if err != nil {
				w.errs = append(w.errs, fmt.Sprintf("%s: %v", v, pathErr(err)))
				continue
			}
			if target != w.root && !strings.HasPrefix(target, w.root+string(filepath.Separator)) {
				w.outside++
				continue
			}
			if fi, err = os.Stat(target); err != nil {
				w.errs = append(w.errs, fmt.Sprintf("%s: %v", v, pathErr(err)))
				continue
			}
			real = target
		}
		switch {
		case fi.Mode().IsRegular():
			w.add(v, real, fi)
		case fi.IsDir():
			if w.visited[real] {
				continue
			}
			w.visited[real] = true
			w.walk(real, v, false)
		}
	}
}

func (w *walker) add(name, real string, fi fs.FileInfo) {
	w.files = append(w.files, listed{name: name, real: real, perm: fi.Mode().Perm(), size: fi.Size()})
	w.total += fi.Size()
	if w.total > w.limit || len(w.files) > MaxFilesPerPath {
		w.over = true
	}
}

// overReason is the one-line reason a path is skipped; listing stops at the first
// file past the limit, so total is a lower bound.
func overReason(total, limit int64, files int) string {
	if files > MaxFilesPerPath {
		return fmt.Sprintf("more than %d files", MaxFilesPerPath)
	}
	return fmt.Sprintf("at least %s, exceeds the %s limit", humanBytes(total), humanBytes(limit))
}

func humanBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}

var errTooLarge = errors.New("file grew past the limit")

// readRegular reads the regular file at the symlink-free path real, failing with
// errTooLarge when it holds more than max bytes.
func readRegular(real string, max int64) ([]byte, error) {
	f, err := os.OpenFile(real, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("no longer a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, errTooLarge
	}
	return data, nil
}

// pathErr strips the path from a *fs.PathError; callers name the file themselves.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
