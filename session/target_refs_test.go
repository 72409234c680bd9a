package session

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestPodFromTemplateRenamesContainerRefs: resourceFieldRefs naming the workload's container (env,
// downwardAPI and projected volumes) name the proxy pod's container, or the kubelet refuses the
// pod; the template itself is left as it was.
func TestPodFromTemplateRenamesContainerRefs(t *testing.T) {
	ref := func() *corev1.ResourceFieldSelector {
		return &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.memory"}
	}
	tpl := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", Env: []corev1.EnvVar{
			{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: ref()}},
			{Name: "PLAIN", Value: "x"},
		}}},
		Volumes: []corev1.Volume{
			{Name: "d", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{Path: "mem", ResourceFieldRef: ref()}}}}},
			{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "mem", ResourceFieldRef: ref()}}}}}}}},
		},
	}}
	pod := podFromTemplate(podSpec{Name: "tp-x", Namespace: "ns", SessionID: "x", Token: "t", IdleTimeout: time.Minute}, tpl, &tpl.Spec.Containers[0], "deployment/app:app")
	var env *corev1.EnvVar
	for i := range pod.Spec.Containers[0].Env {
		if pod.Spec.Containers[0].Env[i].Name == "MEM" {
			env = &pod.Spec.Containers[0].Env[i]
		}
	}
	tests := []struct {
		name string
		got  *corev1.ResourceFieldSelector
	}{
		{"env", env.ValueFrom.ResourceFieldRef},
		{"downwardAPI volume", pod.Spec.Volumes[0].DownwardAPI.Items[0].ResourceFieldRef},
		{"projected downwardAPI", pod.Spec.Volumes[1].Projected.Sources[0].DownwardAPI.Items[0].ResourceFieldRef},
	}
	for _, tt := range tests {
		if tt.got.ContainerName != ContainerName {
			t.Errorf("%s: containerName %q, want %q", tt.name, tt.got.ContainerName, ContainerName)
		}
	}
	if n := tpl.Spec.Containers[0].Env[0].ValueFrom.ResourceFieldRef.ContainerName; n != "app" {
		t.Errorf("the template was changed: %q", n)
	}
	if n := tpl.Spec.Volumes[1].Projected.Sources[0].DownwardAPI.Items[0].ResourceFieldRef.ContainerName; n != "app" {
		t.Errorf("the template's projected volume was changed: %q", n)
	}
}
