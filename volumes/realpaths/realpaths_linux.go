package realpaths

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Prepare makes cmd start in a new user and mount namespace that maps the caller's uid and gid
// to themselves, with CAP_SYS_ADMIN and CAP_SYS_CHROOT there, and passes mounts to [Setup] in
// the started program, which must call it (kubectl-tp's capture helper does). It keeps the
// SysProcAttr settings cmd already has (a process group, a terminal).
func Prepare(cmd *exec.Cmd, mounts []Mount) error {
	if _, err := sorted(mounts); err != nil {
		return err
	}
	b, err := json.Marshal(mounts)
	if err != nil {
		return err
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, envMounts+"=")
	}), envMounts+"="+string(b))
	inNamespaces(cmd)
	return nil
}

// inNamespaces sets cmd's clone flags, id maps and ambient capabilities.
func inNamespaces(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	a := cmd.SysProcAttr
	uid, gid := os.Getuid(), os.Getgid()
	a.Cloneflags |= syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
	a.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	a.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	a.GidMappingsEnableSetgroups = false
	a.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_SYS_CHROOT}
}

// Setup applies the mounts [Prepare] passed, if any, and drops every capability; it removes
// its variable from the environment. Call it before anything else of the program's own, on the
// thread that will execute the command (capabilities are per thread), and treat an error as
// fatal: the program must not run with its files half in place.
func Setup() error {
	v, ok := os.LookupEnv(envMounts)
	if !ok {
		return nil
	}
	_ = os.Unsetenv(envMounts)
	var mounts []Mount
	if err := json.Unmarshal([]byte(v), &mounts); err != nil {
		return fmt.Errorf("files at their real paths: bad %s: %w", envMounts, err)
	}
	if err := Apply(mounts); err != nil {
		return fmt.Errorf("files at their real paths: %w", err)
	}
	return dropCaps()
}

// dropCaps clears the ambient capabilities: the command executed next, whose uid is not 0,
// then starts with none.
func dropCaps() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("dropping capabilities: %w", err)
	}
	return nil
}

// Apply shows every mount's Source read-only at its Target in the calling process's mount
// namespace, which must be its own (see [Prepare]). Targets below another target are mounted
// inside that one's copy, where they must exist. The working directory is kept by path.
func Apply(mounts []Mount) error {
	ms, err := sorted(mounts)
	if err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making the mount namespace private: %w", err)
	}
	cwd, _ := os.Getwd()
	plan := map[string]*shadow{}
	for _, m := range ms {
		if nested(m.Target, ms) {
			continue
		}
		fi, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("%s: its copy: %w", m.Target, err)
		}
		if err := place(m.Target, fi.IsDir(), plan); err != nil {
			return fmt.Errorf("%s: %w", m.Target, err)
		}
	}
	dirs := make([]string, 0, len(plan))
	for d := range plan {
		dirs = append(dirs, d)
	}
	// Outer directories first: an inner one is shadowed inside the outer one's new view.
	slices.SortFunc(dirs, func(a, b string) int {
		if c := depth(a) - depth(b); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	for _, d := range dirs {
		if err := plan[d].apply(); err != nil {
			return err
		}
	}
	for _, m := range ms {
		if err := bindReadOnly(m); err != nil {
			return err
		}
	}
	if cwd != "" && os.Chdir(cwd) != nil {
		_ = os.Chdir("/")
	}
	return nil
}

// depth is the number of components of a clean absolute path: 0 for "/".
func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// bindReadOnly mounts m.Source on m.Target (resolved in the current view) and makes that mount
// read-only, without set-uid programs or device files.
func bindReadOnly(m Mount) error {
	at, err := filepath.EvalSymlinks(m.Target)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Target, err)
	}
	if err := unix.Mount(m.Source, at, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("%s: bind mount of its copy: %w", m.Target, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, at, 0, &attr); err != nil {
		return fmt.Errorf("%s: making it read-only: %w", m.Target, err)
	}
	return nil
}

// shadow is a directory of the laptop to be covered by a tmpfs that holds bind mounts of its
// entries (all but those in replace) plus the paths in create.
type shadow struct {
	dir     string
	replace map[string]bool
	create  []created
}

// created is a path relative to the shadowed directory, made a directory or an empty file to
// mount on; its parents are made directories.
type created struct {
	rel string
	dir bool
}

// place records what target needs in plan: nothing when it exists with the type of its copy
// (a directory or not), else a shadow of the nearest directory on its path that does.
func place(target string, dir bool, plan map[string]*shadow) error {
	comps := strings.Split(strings.TrimPrefix(target, "/"), "/")
	cur := "/"
	for i, c := range comps {
		next := filepath.Join(cur, c)
		last := i == len(comps)-1
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			addShadow(plan, cur, "", comps[i:], dir)
			return nil
		}
		if err != nil {
			return err
		}
		replace := false
		if fi.Mode()&fs.ModeSymlink != 0 {
			if r, err := filepath.EvalSymlinks(next); err != nil {
				replace = true // a dangling link: the path is made instead
			} else if fi, err = os.Stat(r); err != nil {
				replace = true
			} else {
				next = r
			}
		}
		if !replace && (!last && !fi.IsDir() || last && fi.IsDir() != dir) {
			replace = true
		}
		if replace {
			addShadow(plan, cur, c, comps[i:], dir)
			return nil
		}
		cur = next
	}
	return nil
}

func addShadow(plan map[string]*shadow, dir, replace string, rest []string, isDir bool) {
	s := plan[dir]
	if s == nil {
		s = &shadow{dir: dir, replace: map[string]bool{}}
		plan[dir] = s
	}
	if replace != "" {
		s.replace[replace] = true
	}
	s.create = append(s.create, created{rel: filepath.Join(rest...), dir: isDir})
}

// apply builds the shadow on a tmpfs in a staging directory under the temporary directory
// (reached through a descriptor of its parent, so that it can be removed even once that parent
// is itself shadowed), then moves it onto s.dir. The tmpfs is read-only unless s.dir is
// writable by the caller: then new entries land in it, private to the session.
func (s *shadow) apply() error {
	fi, err := os.Stat(s.dir)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("cannot list %s to add a mount point to it: %w", s.dir, err)
	}
	parent, err := unix.Open(os.TempDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", os.TempDir(), err)
	}
	defer unix.Close(parent)
	name := "kubectl-tp-stage-" + strconv.Itoa(os.Getpid())
	if err := unix.Mkdirat(parent, name, 0o700); err != nil {
		return fmt.Errorf("creating a staging directory in %s: %w", os.TempDir(), err)
	}
	defer unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
	stage := "/proc/self/fd/" + strconv.Itoa(parent) + "/" + name

	mode := uint32(fi.Mode().Perm())
	if fi.Mode()&fs.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	if err := unix.Mount("tmpfs", stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("mounting a tmpfs to shadow %s: %w", s.dir, err)
	}
	moved := false
	defer func() {
		if !moved {
			_ = unix.Unmount(stage, unix.MNT_DETACH)
		}
	}()
	// Unbindable: the recursive binds below skip it when they copy a tree it is mounted in.
	if err := unix.Mount("", stage, "", unix.MS_UNBINDABLE, ""); err != nil {
		return fmt.Errorf("shadowing %s: %w", s.dir, err)
	}
	for _, e := range entries {
		if s.replace[e.Name()] {
			continue
		}
		if err := mirrorEntry(filepath.Join(s.dir, e.Name()), filepath.Join(stage, e.Name()), e.Type()); err != nil {
			return fmt.Errorf("shadowing %s: %w", s.dir, err)
		}
	}
	for _, c := range s.create {
		p := filepath.Join(stage, c.rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if c.dir {
			err = os.Mkdir(p, 0o755)
		} else {
			err = os.WriteFile(p, nil, 0o644)
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("making a mount point in the shadow of %s: %w", s.dir, err)
		}
	}
	// The original's mode once populated (it may forbid the caller to write, as /etc does).
	if err := unix.Chmod(stage, mode); err != nil {
		return fmt.Errorf("shadowing %s: %w", s.dir, err)
	}
	if unix.Access(s.dir, unix.W_OK) != nil {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(unix.AT_FDCWD, stage, 0, &attr); err != nil {
			return fmt.Errorf("shadowing %s: %w", s.dir, err)
		}
	}
	if s.dir == "/" {
		// As switch_root does: the moved mount becomes the root through the working directory.
		if err := os.Chdir(stage); err != nil {
			return err
		}
		if err := unix.Mount(stage, "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("shadowing /: %w", err)
		}
		moved = true
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("shadowing /: %w", err)
		}
	} else {
		if err := unix.Mount(stage, s.dir, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("shadowing %s: %w", s.dir, err)
		}
		moved = true
	}
	if err := unix.Mount("", s.dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("shadowing %s: %w", s.dir, err)
	}
	return nil
}

// mirrorEntry makes dst show src: a copy of a symbolic link, else a recursive bind mount on a
// directory or an empty file.
func mirrorEntry(src, dst string, typ fs.FileMode) error {
	switch {
	case typ&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case typ.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
	default:
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			return err
		}
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount of %s: %w", src, err)
	}
	return nil
}

// IsProbe reports whether this process is a [Probe] run; main then calls [ProbeMain].
func IsProbe() bool { return os.Getenv(envProbe) != "" }

// ProbeMain is a probe run's whole life: in its new namespaces it makes its mounts private and
// mounts a tmpfs, which is what [Setup] needs, and exits 0, or 1 with the error on stderr.
func ProbeMain() {
	err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	if err == nil {
		err = unix.Mount("tmpfs", "/", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Probe reports why files cannot be shown at their real paths for this user, or nil: it starts
// this executable (whose main must hand over to [ProbeMain] when [IsProbe]) the way [Prepare]
// starts the helper.
func Probe() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding kubectl-tp's own executable: %w", err)
	}
	return probe(self)
}

func probe(self string) error {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envProbe+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	inNamespaces(cmd)
	err := cmd.Run()
	if err == nil {
		return nil
	}
	detail := strings.TrimSpace(stderr.String())
	if detail == "" {
		detail = err.Error()
	}
	return fmt.Errorf("%s (%s)", whyNoUserNamespace(), detail)
}

// whyNoUserNamespace names the usual switch that keeps unprivileged user namespaces off.
func whyNoUserNamespace() string {
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	switch {
	case read("/proc/sys/user/max_user_namespaces") == "0":
		return "user namespaces are off on this machine (user.max_user_namespaces=0)"
	case read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
		return "unprivileged user namespaces are off on this machine (kernel.unprivileged_userns_clone=0)"
	case read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
		return "AppArmor restricts unprivileged user namespaces on this machine (kernel.apparmor_restrict_unprivileged_userns=1)"
	}
	return "cannot create a user and mount namespace"
}
