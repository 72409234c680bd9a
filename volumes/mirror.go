package volumes

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Defaults for the zero values of Mirror fields, and the time bound of one Sync.
const (
	// DefaultMaxBytes is used when Mirror.MaxBytes is zero.
	DefaultMaxBytes = tunnel.DefaultFilesMaxBytes
	// DefaultInterval is used when Mirror.Interval is zero.
	DefaultInterval = 3 * time.Second
	// SyncTimeout bounds one Sync, fetch included.
	SyncTimeout = time.Minute
)

// Local modes of the copy, whatever the remote modes: secrets must not become group-
// or world-readable on the laptop.
const (
	dirMode  = 0o700
	fileMode = 0o600
	// tmpPrefix starts the names of the temporary files renamed into place.
	tmpPrefix = ".tp-tmp-"
	// maxNoteBytes bounds the skip-reason and error entries of the archive.
	maxNoteBytes = 64 << 10
)

// Mirror keeps a local copy of remote volume mounts below Root. Set the exported
// fields before the first Sync and do not change them afterwards. Sync, Run and
// Remove may be called from different goroutines; they run one at a time.
type Mirror struct {
	// Root is the local directory holding the copy; it is created 0700 if missing
	// and its mode is set to 0700. Mount "/etc/config" is copied to Root/etc/config.
	Root string
	// Mounts are the absolute, clean remote mount paths to copy (at most
	// tunnel.MaxFilesPaths, not "/").
	Mounts []string
	// Fetch returns the archive of paths, normally
	// func(ctx, p) { return client.Files(ctx, p, m.MaxBytes) }. It is called once
	// per Sync with Mounts; ctx bounds the whole transfer.
	Fetch func(ctx context.Context, paths []string) (io.ReadCloser, error)
	// MaxBytes bounds the bytes accepted for one mount; an archive carrying more is
	// rejected. It should match the limit Fetch asks the server for. Zero means
	// DefaultMaxBytes.
	MaxBytes int64
	// Interval is the time between two syncs in Run. Zero means DefaultInterval.
	Interval time.Duration
	// Logf logs problems: failed syncs (once until they change), files the pod could
	// not read, and skipped mounts when OnSkip is nil. Nil means no logging.
	Logf logger.Logf
	// OnSkip is called when a mount is not copied because it exceeds the server's byte
	// limit, with the mount path and the server's one-line reason. It is called
	// again only when the reason changes or after the mount was copied in between.
	OnSkip func(mount, reason string)

	mu        sync.Mutex
	removed   bool           // Remove ran: no Sync may write the copy again
	synced    bool           // a Sync has been attempted
	owned     map[string]int // files written by the Mirror (slash path below Root) -> mount index
	skipped   map[int]string // last skip reason reported per mount index
	remoteErr map[int]string // last error entry logged per mount index
}

func (m *Mirror) logf(format string, args ...any) {
	if m.Logf != nil {
		m.Logf(format, args...)
	}
}

func (m *Mirror) maxBytes() int64 {
	if m.MaxBytes > 0 {
		return m.MaxBytes
	}
	return DefaultMaxBytes
}

func (m *Mirror) interval() time.Duration {
	if m.Interval > 0 {
		return m.Interval
	}
	return DefaultInterval
}

// Sync fetches the mounts once and brings the copy below Root up to date. It keeps
// going after a file that cannot be written and returns all such errors joined. A
// malformed or hostile archive (an entry that is not a regular file, or whose name is
// absolute, contains "..", or does not start with a valid mount index) aborts the
// Sync with an error; nothing is then removed locally, and nothing is ever written
// outside Root.
func (m *Mirror) Sync(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.removed {
		return ErrRemoved
	}
	m.synced = true
	return m.sync(ctx)
}

// ErrRemoved is returned by Sync after Remove: a sync still scheduled must not bring the copy
// (secrets, often) back once the session removed it.
var ErrRemoved = errors.New("volumes: the copy was removed")

// Run keeps the copy fresh until ctx is done, then returns ctx's error. If Sync has
// already been called it first waits one Interval, so the usual pattern is
//
//	if err := m.Sync(ctx); err != nil { ... }
//	go m.Run(ctx)
//
// otherwise it syncs at once. Failed syncs are logged through Logf (once until the
// error changes) and retried every Interval.
func (m *Mirror) Run(ctx context.Context) error {
	m.mu.Lock()
	first := !m.synced
	m.mu.Unlock()
	wait := m.interval()
	if first {
		wait = 0
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		err := m.Sync(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrRemoved) {
			return err
		}
		switch {
		case err != nil && err.Error() != lastErr:
			lastErr = err.Error()
			m.logf("volumes: %v (retrying every %s)", err, m.interval())
		case err == nil && lastErr != "":
			lastErr = ""
			m.logf("volumes: copying volumes works again")
		}
		t.Reset(m.interval())
	}
}

// Remove deletes Root and everything below it; later Syncs return ErrRemoved (and Run ends).
// The caller decides whether to call it; it should not for a directory the user chose.
func (m *Mirror) Remove() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Root == "" || filepath.Clean(m.Root) == "/" {
		return fmt.Errorf("volumes: refusing to remove root %q", m.Root)
	}
	m.owned = nil
	m.removed = true
	if err := os.RemoveAll(m.Root); err != nil {
		return fmt.Errorf("volumes: removing %s: %w", m.Root, err)
	}
	return nil
}

// CheckRoot prepares dir, a directory chosen by the user to hold the copy: it must
// not exist (it is then created, 0700, with its parents) or be an empty directory.
// Otherwise it returns a one-line error saying why dir cannot be used.
func CheckRoot(dir string) error {
	if dir == "" {
		return errors.New("volumes: empty directory name")
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return fmt.Errorf("volumes: creating %s: %w", dir, pathErr(err))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("volumes: %s: %w", dir, pathErr(err))
	}
	if !fi.IsDir() {
		return fmt.Errorf("volumes: %s exists and is not a directory", dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("volumes: %s: %w", dir, pathErr(err))
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("volumes: reading %s: %w", dir, pathErr(err))
	}
	if len(names) > 0 {
		return fmt.Errorf("volumes: %s is not empty; choose a new or empty directory", dir)
	}
	return nil
}

// validMounts checks m.Mounts.
func (m *Mirror) validMounts() error {
	if len(m.Mounts) > tunnel.MaxFilesPaths {
		return fmt.Errorf("volumes: %d mounts, at most %d supported", len(m.Mounts), tunnel.MaxFilesPaths)
	}
	seen := map[string]bool{}
	for _, p := range m.Mounts {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" || slices.Contains(strings.Split(p, "/"), "..") {
			return fmt.Errorf("volumes: mount path %q is not an absolute, clean path below /", p)
		}
		if seen[p] {
			return fmt.Errorf("volumes: mount path %s given twice", p)
		}
		seen[p] = true
	}
	return nil
}

// prepareRoot creates Root 0700 if needed, sets its mode and opens it.
func (m *Mirror) prepareRoot() (*os.Root, error) {
	if m.Root == "" {
		return nil, errors.New("volumes: Mirror.Root is empty")
	}
	if err := os.MkdirAll(m.Root, dirMode); err != nil {
		return nil, fmt.Errorf("volumes: creating %s: %w", m.Root, err)
	}
	fi, err := os.Stat(m.Root)
	if err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("volumes: %s is not a directory", m.Root)
	}
	if fi.Mode().Perm() != dirMode {
		if err := os.Chmod(m.Root, dirMode); err != nil {
			return nil, fmt.Errorf("volumes: %w", err)
		}
	}
	r, err := os.OpenRoot(m.Root)
	if err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	return r, nil
}

// archiveState is what one Sync learned from the archive.
type archiveState struct {
	seen      map[string]int // local files present remotely -> mount index
	bytes     []int64        // bytes received per mount index
	skipped   map[int]string // mount index -> skip reason
	remoteErr map[int]string // mount index -> error entry
	fileMount map[int]bool   // mounts that are a single file
	errs      []error        // local write failures
}

func (m *Mirror) sync(ctx context.Context) error {
	if m.Fetch == nil {
		return errors.New("volumes: Mirror.Fetch is nil")
	}
	if err := m.validMounts(); err != nil {
		return err
	}
	root, err := m.prepareRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	if len(m.Mounts) == 0 {
		return nil
	}
	if m.owned == nil {
		m.owned = map[string]int{}
		m.skipped = map[int]string{}
		m.remoteErr = map[int]string{}
	}

	ctx, cancel := context.WithTimeout(ctx, SyncTimeout)
	defer cancel()
	rc, err := m.Fetch(ctx, m.Mounts)
	if err != nil {
		return fmt.Errorf("volumes: fetching %s: %w", strings.Join(m.Mounts, ", "), err)
	}
	defer rc.Close()
	stop := context.AfterFunc(ctx, func() { rc.Close() })
	defer stop()

	st := &archiveState{
		seen:      map[string]int{},
		bytes:     make([]int64, len(m.Mounts)),
		skipped:   map[int]string{},
		remoteErr: map[int]string{},
		fileMount: map[int]bool{},
	}
	if err := m.readArchive(ctx, root, tar.NewReader(rc), st); err != nil {
		// Keep track of what was written, but remove nothing: the archive is incomplete.
		for p, i := range st.seen {
			m.owned[p] = i
		}
		return errors.Join(append([]error{err}, st.errs...)...)
	}
	m.finish(root, st)
	return errors.Join(st.errs...)
}

// readArchive writes the files of the archive below root.
func (m *Mirror) readArchive(ctx context.Context, root *os.Root, tr *tar.Reader, st *archiveState) error {
	limit := m.maxBytes()
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("volumes: reading archive: %w", err)
		}
		idx, rel, err := parseName(hdr.Name, len(m.Mounts))
		if err != nil {
			return fmt.Errorf("volumes: rejecting archive: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("volumes: rejecting archive: entry %q is not a regular file (type %q)", hdr.Name, hdr.Typeflag)
		}
		reserved := rel == tunnel.FilesSkippedName || rel == tunnel.FilesErrorsName
		switch {
		case hdr.Size < 0, reserved && hdr.Size > maxNoteBytes:
			return fmt.Errorf("volumes: rejecting archive: entry %q has a bad size %d", hdr.Name, hdr.Size)
		case !reserved && hdr.Size > limit-st.bytes[idx]:
			return fmt.Errorf("volumes: rejecting archive: more than %d bytes for %s", limit, m.Mounts[idx])
		case !reserved:
			st.bytes[idx] += hdr.Size
		}
		data := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("volumes: reading archive: %w", err)
		}
		switch rel {
		case tunnel.FilesSkippedName:
			st.skipped[idx] = strings.TrimSpace(string(data))
			continue
		case tunnel.FilesErrorsName:
			st.remoteErr[idx] = strings.TrimSpace(string(data))
			continue
		case "":
			st.fileMount[idx] = true
		}
		local := localPath(m.Mounts[idx], rel)
		if err := m.writeFile(root, local, data); err != nil {
			st.errs = append(st.errs, fmt.Errorf("volumes: %s: %w", path.Join(m.Mounts[idx], rel), err))
		}
		st.seen[local] = idx
	}
}

// finish removes the files that disappeared remotely, creates the mount directories
// and reports skipped mounts and remote errors.
func (m *Mirror) finish(root *os.Root, st *archiveState) {
	owned := st.seen
	for p, idx := range m.owned {
		if _, ok := owned[p]; ok {
			continue
		}
		if _, skipped := st.skipped[idx]; skipped {
			owned[p] = idx // unknown remote state: keep the last copy
			continue
		}
		if err := removeFile(root, p, localPath(m.Mounts[idx], "")); err != nil {
			st.errs = append(st.errs, fmt.Errorf("volumes: removing %s: %w", "/"+p, err))
			owned[p] = idx
		}
	}
	m.owned = owned

	for idx, mount := range m.Mounts {
		reason, skipped := st.skipped[idx]
		switch {
		case skipped && reason != m.skipped[idx]:
			if m.OnSkip != nil {
				m.OnSkip(mount, reason)
			} else {
				m.logf("volumes: not copying %s: %s", mount, reason)
			}
		case !skipped && !st.fileMount[idx]:
			if err := ensureDirs(root, localPath(mount, "")); err != nil {
				st.errs = append(st.errs, fmt.Errorf("volumes: %s: %w", mount, err))
			}
		}
		if skipped {
			m.skipped[idx] = reason
		} else {
			delete(m.skipped, idx)
		}
		if msg := st.remoteErr[idx]; msg != m.remoteErr[idx] {
			if msg != "" {
				m.logf("volumes: %s: some files could not be copied:\n%s", mount, msg)
			}
			m.remoteErr[idx] = msg
		}
	}
}

// localPath is the slash path below Root of file rel of a mount ("" for the mount itself).
func localPath(mount, rel string) string {
	return path.Join(strings.TrimPrefix(mount, "/"), rel)
}

// parseName validates an archive entry name "index/rel" (or "index" alone) and splits it.
func parseName(name string, mounts int) (int, string, error) {
	if name == "" || strings.HasPrefix(name, "/") {
		return 0, "", fmt.Errorf("entry %q: absolute or empty name", name)
	}
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return 0, "", fmt.Errorf("entry %q: empty, . or .. component", name)
		}
	}
	idx, err := strconv.Atoi(parts[0])
	if err != nil || idx < 0 || idx >= mounts || strconv.Itoa(idx) != parts[0] {
		return 0, "", fmt.Errorf("entry %q: no mount with index %q", name, parts[0])
	}
	return idx, strings.Join(parts[1:], "/"), nil
}

// ensureDirs makes sure every component of dir (a slash path below root) is a real
// directory, creating missing ones 0700. It never follows a symbolic link.
func ensureDirs(root *os.Root, dir string) error {
	cur := ""
	for part := range strings.SplitSeq(dir, "/") {
		if part == "" || part == "." {
			continue
		}
		cur = path.Join(cur, part)
		fi, err := root.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			err = root.Mkdir(cur, dirMode)
			if errors.Is(err, fs.ErrExist) {
				fi, err = root.Lstat(cur)
			}
		}
		if err != nil {
			return pathErr(err)
		}
		if fi != nil && !fi.IsDir() {
			return fmt.Errorf("refusing to write below %s: it is not a directory (%s)", "/"+cur, fi.Mode().Type())
		}
	}
	return nil
}

// writeFile writes data to the slash path rel below root, atomically and only when
// the content or mode differs. An existing symbolic link at rel is replaced, not
// followed.
func (m *Mirror) writeFile(root *os.Root, rel string, data []byte) error {
	dir := path.Dir(rel)
	if err := ensureDirs(root, dir); err != nil {
		if _, owned := m.owned[dir]; !owned {
			return err
		}
		// A file the Mirror wrote became a directory remotely.
		if err := root.Remove(dir); err != nil {
			return pathErr(err)
		}
		if err := ensureDirs(root, dir); err != nil {
			return err
		}
	}
	fi, err := root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return pathErr(err)
	case fi.IsDir():
		return errors.New("a directory is in the way")
	case fi.Mode().IsRegular() && fi.Mode().Perm() == fileMode && fi.Size() == int64(len(data)):
		if same, err := sameContent(root, rel, data); err == nil && same {
			return nil
		}
	}
	tmp := path.Join(dir, tmpPrefix+randomHex())
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, fileMode)
	if err != nil {
		return pathErr(err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(fileMode) // the umask may have removed bits
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, rel)
	}
	if err != nil {
		_ = root.Remove(tmp)
		return pathErr(err)
	}
	return nil
}

// sameContent reports whether the regular file rel holds exactly data.
func sameContent(root *os.Root, rel string, data []byte) (bool, error) {
	f, err := root.OpenFile(rel, os.O_RDONLY|oNoFollow|oNonBlock, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false, err
	}
	got, err := io.ReadAll(io.LimitReader(f, int64(len(data))+1))
	if err != nil {
		return false, err
	}
	return bytes.Equal(got, data), nil
}

// removeFile removes the regular file rel below root and then its parent directories
// that became empty, up to but excluding mountDir.
func removeFile(root *os.Root, rel, mountDir string) error {
	fi, err := root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return pathErr(err)
	}
	if !fi.Mode().IsRegular() {
		return nil // not ours any more
	}
	if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return pathErr(err)
	}
	for d := path.Dir(rel); strings.HasPrefix(d, mountDir+"/"); d = path.Dir(d) {
		if root.Remove(d) != nil {
			break
		}
	}
	return nil
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pathErr strips the path from a *fs.PathError; callers name the file themselves.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
