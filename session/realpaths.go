package session

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-tp/kubectl-tp/volumes/realpaths"
)

// realPathMounts chooses which volume mounts of the proxy pod's container the child sees at their
// real paths, each from its copy below root; skipped says why the others are not (one entry
// each, "PATH (reason)"). An emptyDir is scratch space: the laptop's own directory stays. A
// volume the copy skipped (too large) has no copy to show.
func realPathMounts(pod *corev1.Pod, root string) (mounts []realpaths.Mount, skipped []string) {
	kinds := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		kinds[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != ContainerName {
			continue
		}
		for _, m := range c.VolumeMounts {
			target := filepath.Clean(m.MountPath)
			if v := kinds[m.Name]; v != nil && v.EmptyDir != nil {
				skipped = append(skipped, target+" (emptyDir: the laptop's own stays)")
				continue
			}
			if err := realpaths.Check(target); err != nil {
				skipped = append(skipped, fmt.Sprintf("%s (%v)", target, err))
				continue
			}
			source := filepath.Join(root, target)
			if _, err := os.Stat(source); err != nil {
				skipped = append(skipped, target+" (not copied)")
				continue
			}
			mounts = append(mounts, realpaths.Mount{Source: source, Target: target})
		}
	}
	return mounts, skipped
}

// planRealPaths decides, for a transparent session with copied volumes, which copies its child
// sees at their real paths, and says in one line what it leaves out or why it cannot.
func (s *Session) planRealPaths(pod *corev1.Pod) {
	if s.transparent == nil || s.mirror == nil || s.opts.NoRealPaths {
		return
	}
	mounts, skipped := realPathMounts(pod, s.Endpoints.Root)
	if len(mounts) == 0 {
		return
	}
	if err := realpaths.Probe(); err != nil {
		fmt.Fprintf(s.opts.Stderr, "kubectl-tp: volumes are under $TP_ROOT only, not at their real paths: %v\n", err)
		return
	}
	if len(skipped) > 0 {
		fmt.Fprintf(s.opts.Stderr, "kubectl-tp: not at their real paths (only under $TP_ROOT): %s\n", strings.Join(skipped, ", "))
	}
	s.transparent.mounts = mounts
}
