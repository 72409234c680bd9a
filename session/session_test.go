package session

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestChildEnv(t *testing.T) {
	e := Endpoints{SOCKS: "127.0.0.1:1080", HTTP: "127.0.0.1:3128", DNS: "127.0.0.1:5353", JavaSOCKS: "127.0.0.1:1081", Username: "u", Password: "p@ss", Namespace: "ns", Pod: "tp-1"}
	noJava := e
	noJava.JavaSOCKS = ""
	cases := []struct {
		name   string
		base   []string
		e      Endpoints
		want   map[string]string
		absent []string
	}{
		{"fresh", []string{"PATH=/bin"}, e, map[string]string{
			"PATH":              "/bin",
			"HTTP_PROXY":        "http://u:p%40ss@127.0.0.1:3128",
			"https_proxy":       "http://u:p%40ss@127.0.0.1:3128",
			"ALL_PROXY":         "socks5h://u:p%40ss@127.0.0.1:1080",
			"NO_PROXY":          "localhost,127.0.0.0/8,::1",
			"TP_DNS":            "127.0.0.1:5353",
			"TP_SOCKS":          "127.0.0.1:1080",
			"TP_NAMESPACE":      "ns",
			"TP_POD":            "tp-1",
			"JAVA_TOOL_OPTIONS": "-DsocksProxyHost=127.0.0.1 -DsocksProxyPort=1081",
		}, nil},
		{"replaces user proxies, appends to JAVA_TOOL_OPTIONS", []string{"HTTP_PROXY=http://corp:8080", "JAVA_TOOL_OPTIONS=-Xmx1g"}, e, map[string]string{
			"HTTP_PROXY":        "http://u:p%40ss@127.0.0.1:3128",
			"JAVA_TOOL_OPTIONS": "-Xmx1g -DsocksProxyHost=127.0.0.1 -DsocksProxyPort=1081",
		}, nil},
		{"no JVM proxy: JAVA_TOOL_OPTIONS kept", []string{"JAVA_TOOL_OPTIONS=-Xmx1g"}, noJava, map[string]string{
			"JAVA_TOOL_OPTIONS": "-Xmx1g",
			"ALL_PROXY":         "socks5h://u:p%40ss@127.0.0.1:1080",
		}, nil},
		{"no JVM proxy: JAVA_TOOL_OPTIONS not added", []string{"PATH=/bin"}, noJava, map[string]string{
			"PATH": "/bin",
		}, []string{"JAVA_TOOL_OPTIONS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			count := map[string]int{}
			for _, kv := range ChildEnv(tc.base, tc.e) {
				k, v, _ := strings.Cut(kv, "=")
				got[k] = v
				count[k]++
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := got[k]; ok {
					t.Errorf("%s = %q, want it unset", k, v)
				}
			}
			for k, n := range count {
				if n > 1 {
					t.Errorf("%s set %d times", k, n)
				}
			}
			if strings.Contains(got["JAVA_TOOL_OPTIONS"], tc.e.Password) {
				t.Errorf("JAVA_TOOL_OPTIONS = %q holds the proxy password", got["JAVA_TOOL_OPTIONS"])
			}
		})
	}
}

func TestBuildPodIsRestricted(t *testing.T) {
	pod := buildPod(podSpec{Name: "tp-x", Namespace: "ns", SessionID: "x", Image: "img", Token: "t", IdleTimeout: 30 * time.Second})
	sc := pod.Spec.SecurityContext
	c := pod.Spec.Containers[0]
	checks := []struct {
		name string
		ok   bool
	}{
		{"runAsNonRoot", sc.RunAsNonRoot != nil && *sc.RunAsNonRoot},
		{"uid 65532", sc.RunAsUser != nil && *sc.RunAsUser == 65532},
		{"seccomp RuntimeDefault", sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault},
		{"no privilege escalation", c.SecurityContext.AllowPrivilegeEscalation != nil && !*c.SecurityContext.AllowPrivilegeEscalation},
		{"read-only root fs", c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem},
		{"drops ALL capabilities", len(c.SecurityContext.Capabilities.Drop) == 1 && c.SecurityContext.Capabilities.Drop[0] == "ALL"},
		{"never restarts", pod.Spec.RestartPolicy == corev1.RestartPolicyNever},
		{"managed-by label", pod.Labels[LabelManagedBy] == ManagedBy && pod.Labels[LabelSession] == "x"},
		{"IfNotPresent", c.ImagePullPolicy == corev1.PullIfNotPresent},
		{"idle timeout passed", strings.Contains(strings.Join(c.Args, " "), "-idle-timeout=30s")},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: not satisfied", ch.name)
		}
	}
}

func TestPodStarted(t *testing.T) {
	waiting := func(reason string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tp-x"}, Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{
			Phase:             corev1.PodPending,
			ContainerStatuses: []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "boom"}}}},
		}}
	}
	running := waiting("")
	running.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	unschedulable := &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available"}}}}
	cases := []struct {
		name    string
		pod     *corev1.Pod
		done    bool
		errPart string
	}{
		{"creating", waiting("ContainerCreating"), false, ""},
		{"running", running, true, ""},
		{"image pull", waiting("ErrImagePull"), true, "cannot be pulled"},
		{"backoff", waiting("ImagePullBackOff"), true, "cannot be pulled"},
		{"config error", waiting("CreateContainerConfigError"), true, "configuration is invalid"},
		{"unschedulable", unschedulable, true, "cannot be scheduled: 0/1 nodes"},
		{"failed", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Message: "evicted"}}, true, "ended (Failed)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			done, err := podStarted(context.Background(), nil, tc.pod, func(string) {})
			if done != tc.done {
				t.Fatalf("done = %v, want %v (err %v)", done, tc.done, err)
			}
			if (err != nil) != (tc.errPart != "") || (err != nil && !strings.Contains(err.Error(), tc.errPart)) {
				t.Fatalf("err = %v, want containing %q", err, tc.errPart)
			}
		})
	}
}

func TestPreflight(t *testing.T) {
	cases := []struct {
		name    string
		denied  map[string]bool // "verb resource/sub"
		errPart string
	}{
		{"all allowed", nil, ""},
		{"no portforward", map[string]bool{"create pods/portforward": true}, "missing permission in namespace \"ns\": create pods/portforward"},
		{"two missing", map[string]bool{"create pods": true, "delete pods": true}, "create pods, delete pods"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset()
			cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
				r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
				ra := r.Spec.ResourceAttributes
				p := Permission{Verb: ra.Verb, Resource: ra.Resource, Subresource: ra.Subresource}
				r.Status.Allowed = !tc.denied[p.String()]
				return true, r, nil
			})
			err := Preflight(context.Background(), cs, "ns", RunPermissions)
			if (err != nil) != (tc.errPart != "") || (err != nil && !strings.Contains(err.Error(), tc.errPart)) {
				t.Fatalf("err = %v, want containing %q", err, tc.errPart)
			}
		})
	}
}

func TestSweepStaleCopies(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, owner string
		kept        bool
	}{
		{"live session", strconv.Itoa(os.Getpid()), true},
		{"dead session", strconv.Itoa(dead.Process.Pid), false},
		{"no owner file", "", true},
		{"garbage owner", "not-a-pid", true},
	}
	for i, tc := range cases {
		d := filepath.Join(tmp, fmt.Sprintf("kubectl-tp-%d-x", i))
		if err := os.MkdirAll(filepath.Join(d, "etc/secret"), 0o700); err != nil {
			t.Fatal(err)
		}
		if tc.owner != "" {
			if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(tc.owner), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out strings.Builder
	SweepStaleCopies(&out)
	for i, tc := range cases {
		_, err := os.Stat(filepath.Join(tmp, fmt.Sprintf("kubectl-tp-%d-x", i)))
		if kept := err == nil; kept != tc.kept {
			t.Errorf("%s: kept = %v, want %v", tc.name, kept, tc.kept)
		}
	}
	if !strings.Contains(out.String(), "kubectl-tp-1-x") {
		t.Errorf("removal not reported: %q", out.String())
	}
}
