package session

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in      string
		want    Target
		errPart string
	}{
		{"api", Target{Kind: "deployments", Name: "api"}, ""},
		{"api:app", Target{Kind: "deployments", Name: "api", Container: "app"}, ""},
		{"deploy/api", Target{Kind: "deployments", Name: "api"}, ""},
		{"StatefulSet/db:main", Target{Kind: "statefulsets", Name: "db", Container: "main"}, ""},
		{"ds/agent", Target{Kind: "daemonsets", Name: "agent"}, ""},
		{"rs/api-123", Target{Kind: "replicasets", Name: "api-123"}, ""},
		{"pod/x", Target{Kind: "pods", Name: "x"}, ""},
		{"cronjob/x", Target{}, `workload type "cronjob" is not supported`},
		{"deployment/", Target{}, "has no valid name"},
		{"", Target{}, "empty workload"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("err = %v, want %q", err, tc.errPart)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestPickContainer(t *testing.T) {
	tpl := func(ann string) *corev1.PodTemplateSpec {
		t := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sidecar"}, {Name: "app"}}}}
		if ann != "" {
			t.Annotations = map[string]string{DefaultContainerAnnotation: ann}
		}
		return t
	}
	cases := []struct {
		name, ann, want, got, errPart string
	}{
		{"first by default", "", "", "sidecar", ""},
		{"annotation", "app", "", "app", ""},
		{"explicit wins", "app", "sidecar", "sidecar", ""},
		{"unknown lists valid", "", "nope", "", `container "nope" not found; valid containers: sidecar, app`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := pickContainer(tpl(tc.ann), tc.want)
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("err = %v, want %q", err, tc.errPart)
				}
				return
			}
			if err != nil || c.Name != tc.got {
				t.Fatalf("got %v, %v; want %s", c, err, tc.got)
			}
		})
	}
}

func TestPodFromTemplate(t *testing.T) {
	tpl := &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api"}, Annotations: map[string]string{"sidecar.istio.io/inject": "true"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "api-sa",
			InitContainers:     []corev1.Container{{Name: "migrate"}},
			Volumes:            []corev1.Volume{{Name: "config"}},
			NodeSelector:       map[string]string{"disk": "ssd"},
			SecurityContext:    &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0), FSGroup: ptr.To[int64](2000)},
			Containers: []corev1.Container{{
				Name: "app", Image: "api:1", Command: []string{"/api"},
				Env:             []corev1.EnvVar{{Name: "A", Value: "1"}},
				EnvFrom:         []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}},
				VolumeMounts:    []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}},
				ReadinessProbe:  &corev1.Probe{},
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000)},
			}},
		},
	}
	pod := podFromTemplate(podSpec{Name: "tp-x", SessionID: "x", Image: "shim", Token: "tok", IdleTimeout: time.Second}, tpl, &tpl.Spec.Containers[0], "deployments/api:app")
	c := pod.Spec.Containers[0]
	checks := []struct {
		name string
		ok   bool
	}{
		{"one container, podshim image", len(pod.Spec.Containers) == 1 && c.Image == "shim" && len(c.Command) == 0},
		{"no init containers", len(pod.Spec.InitContainers) == 0},
		{"labels not copied", pod.Labels["app"] == "" && pod.Labels[LabelManagedBy] == ManagedBy},
		{"annotations not copied", pod.Annotations["sidecar.istio.io/inject"] == "" && pod.Annotations[AnnotationFrom] == "deployments/api:app"},
		{"service account kept", pod.Spec.ServiceAccountName == "api-sa"},
		{"volumes kept", len(pod.Spec.Volumes) == 1},
		{"node selector kept", pod.Spec.NodeSelector["disk"] == "ssd"},
		{"env then token", len(c.Env) == 2 && c.Env[0].Name == "A" && c.Env[1].Name == "TP_TOKEN"},
		{"envFrom kept", len(c.EnvFrom) == 1},
		{"mounts read-only", len(c.VolumeMounts) == 1 && c.VolumeMounts[0].ReadOnly},
		{"no probes", c.ReadinessProbe == nil && c.LivenessProbe == nil},
		{"container uid used, never root", *pod.Spec.SecurityContext.RunAsUser == 1000},
		{"fsGroup kept", *pod.Spec.SecurityContext.FSGroup == 2000},
		{"still restricted", *pod.Spec.SecurityContext.RunAsNonRoot && *c.SecurityContext.ReadOnlyRootFilesystem},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: not satisfied", ch.name)
		}
	}
}
