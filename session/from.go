package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-tp/kubectl-tp/envcapture"
	"github.com/kubectl-tp/kubectl-tp/volumes"
)

// capture fetches what the kubelet computed for the proxy pod built from the target workload:
// its environment (filtered of what belongs to the machine), written to the requested files, and
// the contents of its volumes, mirrored under a private directory that stays fresh.
func (s *Session) capture(ctx, runCtx context.Context, pod *corev1.Pod) error {
	env, err := s.client.Env(ctx)
	if err != nil {
		return fmt.Errorf("reading the environment of %s: %w", s.opts.From, err)
	}
	s.Captured = envcapture.Filter(env)
	syntax, err := envcapture.ParseSyntax(s.opts.EnvSyntax)
	if err != nil {
		return err
	}
	if err := s.writeEnvFile(s.opts.EnvFile, syntax); err != nil {
		return err
	}
	if err := s.writeEnvFile(s.opts.EnvJSON, envcapture.SyntaxJSON); err != nil {
		return err
	}
	if s.opts.Mount == "false" {
		return nil
	}
	var mounts []string
	for _, c := range pod.Spec.Containers {
		if c.Name == ContainerName {
			for _, m := range c.VolumeMounts {
				mounts = append(mounts, m.MountPath)
			}
		}
	}
	root := s.opts.Mount
	if root == "" || root == "true" {
		SweepStaleCopies(s.opts.Stderr)
		if root, err = os.MkdirTemp("", copyPrefix+s.ID+"-"); err != nil {
			return fmt.Errorf("creating the local copy of the volumes: %w", err)
		}
		s.removeRoot = true
		if err := os.WriteFile(filepath.Join(root, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return fmt.Errorf("creating the local copy of the volumes: %w", err)
		}
	} else {
		if root, err = filepath.Abs(root); err != nil {
			return err
		}
		if err := volumes.CheckRoot(root); err != nil {
			return fmt.Errorf("--mount: %w", err)
		}
	}
	s.mirror = &volumes.Mirror{
		Root:   root,
		Mounts: mounts,
		Fetch: func(ctx context.Context, paths []string) (io.ReadCloser, error) {
			return s.client.Files(ctx, paths, s.opts.MaxVolumeBytes)
		},
		MaxBytes: s.opts.MaxVolumeBytes,
		Logf:     func(f string, a ...any) { fmt.Fprintf(s.opts.Stderr, "kubectl-tp: "+f+"\n", a...) },
		OnSkip: func(mount, reason string) {
			fmt.Fprintf(s.opts.Stderr, "kubectl-tp: warning: volume at %s not copied: %s (raise the limit with --max-volume-size)\n", mount, reason)
		},
	}
	if err := s.mirror.Sync(ctx); err != nil {
		return fmt.Errorf("copying the volumes of %s: %w", s.opts.From, err)
	}
	s.Endpoints.Root = root
	s.Endpoints.Mounts = mounts
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.mirror.Run(runCtx) }()
	return nil
}

// writeEnvFile writes the captured environment to path (mode 0600, replaced atomically), if path
// is set. Variables the syntax cannot express are left out with a warning.
func (s *Session) writeEnvFile(path string, syntax envcapture.Syntax) error {
	if path == "" {
		return nil
	}
	err := envcapture.WriteFile(path, s.Captured, syntax)
	if errors.Is(err, envcapture.ErrUnrepresentable) {
		fmt.Fprintf(s.opts.Stderr, "kubectl-tp: warning: %s: %v\n", path, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing the environment to %s: %w", path, err)
	}
	return nil
}

// mountsEnv joins mount paths as TP_MOUNTS carries them.
func mountsEnv(m []string) string { return strings.Join(m, ":") }

// copyPrefix names the temporary directories that hold volume copies; ownerFile in each records the
// PID of the kubectl-tp that made it.
const (
	copyPrefix = "kubectl-tp-"
	ownerFile  = ".kubectl-tp-pid"
)

// SweepStaleCopies removes the volume copies (secrets included) that a kubectl-tp killed with
// SIGKILL or by a crash left in the temporary directory: those of this user whose recorded
// process is gone. Every session start and `kubectl tp cleanup` call it.
func SweepStaleCopies(w io.Writer) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), copyPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not ours, or not readable by us
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || processAlive(pid) {
			continue
		}
		if err := os.RemoveAll(d); err == nil && w != nil {
			fmt.Fprintf(w, "kubectl-tp: removed %s, the volume copy of a session that ended without cleaning up\n", d)
		}
	}
}
