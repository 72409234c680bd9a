package session

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestRealPathMounts checks which mounts of the proxy pod's container go to their real paths:
// every copied volume but emptyDirs, nothing under /proc, /sys or /dev, nothing without a copy,
// and no mount of another container.
func TestRealPathMounts(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"etc/app", "var/run/secrets/kubernetes.io/serviceaccount", "data", "dev/shm", "cache"} {
		if err := os.MkdirAll(filepath.Join(root, p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/level.conf"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
			{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}},
			{Name: "pvc", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{}}},
			{Name: "shm", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "big", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{}}},
		},
		Containers: []corev1.Container{
			{Name: "other", VolumeMounts: []corev1.VolumeMount{{Name: "cfg", MountPath: "/other"}}},
			{Name: ContainerName, VolumeMounts: []corev1.VolumeMount{
				{Name: "cfg", MountPath: "/etc/app/"},
				{Name: "cfg", MountPath: "/etc/level.conf", SubPath: "LEVEL"},
				{Name: "token", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"},
				{Name: "pvc", MountPath: "/data"},
				{Name: "shm", MountPath: "/dev/shm"},
				{Name: "scratch", MountPath: "/cache"},
				{Name: "big", MountPath: "/etc/big"},
			}},
		},
	}}
	mounts, skipped := realPathMounts(pod, root)
	var targets []string
	for _, m := range mounts {
		targets = append(targets, m.Target)
		if m.Source != filepath.Join(root, m.Target) {
			t.Errorf("%s: source %s, want its copy below %s", m.Target, m.Source, root)
		}
	}
	wantTargets := []string{"/etc/app", "/etc/level.conf", "/var/run/secrets/kubernetes.io/serviceaccount", "/data"}
	if !slices.Equal(targets, wantTargets) {
		t.Errorf("targets %v, want %v", targets, wantTargets)
	}
	wantSkipped := []string{
		"/dev/shm (/dev belongs to the kernel or devices of this machine)",
		"/cache (emptyDir: the laptop's own stays)",
		"/etc/big (not copied)",
	}
	if !slices.Equal(skipped, wantSkipped) {
		t.Errorf("skipped %q, want %q", skipped, wantSkipped)
	}
}
