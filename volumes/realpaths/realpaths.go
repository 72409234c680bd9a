package realpaths

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Mount is one copy shown at its real path.
type Mount struct {
	// Source is the local copy: a directory, or a file for a single-file (subPath) mount.
	Source string `json:"source"`
	// Target is the absolute path where the program sees Source, read-only.
	Target string `json:"target"`
}

// envMounts carries the JSON list of mounts from [Prepare] to [Setup]; envProbe marks a
// [Probe] run of the executable.
const (
	envMounts = "KUBECTL_TP_REAL_PATHS"
	envProbe  = "KUBECTL_TP_REAL_PATHS_PROBE"
)

// ErrUnsupported is returned by [Probe] and [Prepare] where this package cannot work at all.
var ErrUnsupported = errors.New("files at their real paths need Linux")

// refused are the trees a target may not enter: the kernel's and devices' own file systems.
var refused = []string{"/proc", "/sys", "/dev"}

// Check returns why target cannot be shown at its real path, or nil. Callers use it to leave a
// mount at $TP_ROOT only, with that reason, before anything runs.
func Check(target string) error {
	if !filepath.IsAbs(target) || filepath.Clean(target) != target {
		return fmt.Errorf("%q is not a clean absolute path", target)
	}
	if target == "/" {
		return errors.New("it would hide the whole file system")
	}
	for _, r := range refused {
		if target == r || strings.HasPrefix(target, r+"/") {
			return fmt.Errorf("%s belongs to the kernel or devices of this machine", r)
		}
	}
	return nil
}

// sorted checks every mount and returns them parents first: a target below another target is
// mounted after it, inside its copy.
func sorted(mounts []Mount) ([]Mount, error) {
	out := slices.Clone(mounts)
	for _, m := range out {
		if err := Check(m.Target); err != nil {
			return nil, fmt.Errorf("cannot show %s at its real path: %w", m.Target, err)
		}
		if !filepath.IsAbs(m.Source) {
			return nil, fmt.Errorf("cannot show %s at its real path: its copy %q is not an absolute path", m.Target, m.Source)
		}
	}
	slices.SortFunc(out, func(a, b Mount) int { return strings.Compare(a.Target, b.Target) })
	for i := 1; i < len(out); i++ {
		if out[i].Target == out[i-1].Target {
			return nil, fmt.Errorf("cannot show two copies at %s", out[i].Target)
		}
	}
	return out, nil
}

// nested reports whether target lies below one of the other targets.
func nested(target string, all []Mount) bool {
	for _, m := range all {
		if m.Target != target && strings.HasPrefix(target, m.Target+"/") {
			return true
		}
	}
	return false
}
