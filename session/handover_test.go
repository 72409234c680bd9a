package session

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// signalChild runs a python child that exits 7 on SIGTERM and answers "alive" to every stdin line,
// with before as the Child's BeforeSignal. It returns the child's stdin, a reader of its stdout
// (after "ready") and a channel with its exit code.
func signalChild(t *testing.T, before func()) (io.WriteCloser, *bufio.Reader, <-chan int) {
	t.Helper()
	// Real pipes: with an io.Pipe, exec would copy in a goroutine that Wait waits for.
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inR.Close(); outR.Close(); outW.Close() })
	c := Child{
		Argv: []string{"python3", "-u", "-c", `
import os, signal, sys
signal.signal(signal.SIGTERM, lambda *a: os._exit(7))
print("ready")
for line in sys.stdin:
    print("alive")
`},
		Env: os.Environ(), Stdin: inR, Stdout: outW, Stderr: os.Stderr, BeforeSignal: before,
	}
	codes := make(chan int, 1)
	go func() {
		code, err := c.Run()
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = outW.Close()
		codes <- code
	}()
	out := bufio.NewReader(outR)
	if l, err := out.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("child start: %q, %v", l, err)
	}
	return inW, out, codes
}

// alive asks the child to answer and reports whether it did.
func alive(in io.Writer, out *bufio.Reader) bool {
	if _, err := io.WriteString(in, "ping\n"); err != nil {
		return false
	}
	l, err := out.ReadString('\n')
	return err == nil && l == "alive\n"
}

// TestChildBeforeSignal checks the order of a swap's shut-down: on SIGTERM, BeforeSignal runs while
// the child still serves, and the child gets the signal only when it returns; a second signal
// during BeforeSignal is passed on at once.
func TestChildBeforeSignal(t *testing.T) {
	tests := []struct {
		name    string
		signals int
	}{
		{"one signal waits for BeforeSignal", 1},
		{"a second signal does not wait", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			in, out, codes := signalChild(t, func() { close(entered); <-release })
			defer in.Close()
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-entered:
			case code := <-codes:
				t.Fatalf("the child ended (code %d) without BeforeSignal running", code)
			}
			if !alive(in, out) {
				t.Fatal("the child got the signal before BeforeSignal returned")
			}
			if tt.signals == 2 {
				if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			} else {
				close(release)
			}
			select {
			case code := <-codes:
				if code != 7 {
					t.Fatalf("exit code %d, want 7 (the child's SIGTERM handler)", code)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the child never got the signal")
			}
		})
	}
}

func TestSwapWarning(t *testing.T) {
	withHook := corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}, {Name: "b", Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 2}}}}}}
	tests := []struct {
		name string
		spec corev1.PodSpec
		warn bool
	}{
		{"no hook", corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}, true},
		{"a preStop hook", withHook, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := swapWarning("api", &tt.spec)
			if (w != "") != tt.warn {
				t.Fatalf("warning %q, want one: %v", w, tt.warn)
			}
			if tt.warn && (!strings.Contains(w, "deployment/api") || !strings.Contains(w, "preStop")) {
				t.Errorf("the warning must name the Deployment and the fix: %q", w)
			}
		})
	}
}

func slice(svc string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-" + randomHex(2), Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		Endpoints:  eps,
	}
}

func endpoint(pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{"10.0.0.1"},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod},
	}
}

// TestServiceEndpoints reads the EndpointSlices of the Services that select a pod as the swap's
// switches do.
func TestServiceEndpoints(t *testing.T) {
	cs := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "other"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless-manual", Namespace: "ns"}},
		slice("api", endpoint("tp-1", true), endpoint("api-x", false)),
		slice("api", endpoint("api-y", true)),
		slice("other", endpoint("other-z", true)),
	)
	ctx := context.Background()
	svcs, err := selectingServices(ctx, cs, "ns", map[string]string{"app": "api", "kubectl-tp.io/session": "1"})
	if err != nil || len(svcs) != 1 || svcs[0] != "api" {
		t.Fatalf("selecting Services = %v, %v; want [api]", svcs, err)
	}
	tests := []struct {
		svc, pod string
		want     endpointState
	}{
		{"api", "tp-1", endpointState{pod: true, podReady: true, others: 1}},
		{"api", "tp-2", endpointState{others: 2}},
		{"other", "tp-1", endpointState{others: 1}},
	}
	for _, tt := range tests {
		got, err := serviceEndpoints(ctx, cs, "ns", tt.svc, tt.pod)
		if err != nil || got != tt.want {
			t.Errorf("serviceEndpoints(%s, %s) = %+v, %v; want %+v", tt.svc, tt.pod, got, err, tt.want)
		}
	}
	if w := waitEndpoints(ctx, cs, "ns", "tp-1", []string{"api"}, "ready", func(st endpointState) bool { return st.podReady }); w != "" {
		t.Errorf("a condition that holds: %q", w)
	}
}

// TestUnlabel takes the proxy pod out of the Services: the template's labels go, kubectl-tp's stay.
func TestUnlabel(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tp-1", Namespace: "ns", Labels: map[string]string{
		"app": "api", "tier": "web", LabelManagedBy: ManagedBy, LabelSession: "1"}}}
	cs := fake.NewClientset(pod)
	s := &Session{opts: Options{Client: cs, Namespace: "ns"}, podTemplate: pod.DeepCopy()}
	if err := s.unlabel(context.Background(), "tp-1"); err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().Pods("ns").Get(context.Background(), "tp-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{LabelManagedBy: ManagedBy, LabelSession: "1"}
	if len(got.Labels) != len(want) || got.Labels[LabelManagedBy] != ManagedBy || got.Labels[LabelSession] != "1" {
		t.Errorf("labels after unlabel = %v, want %v", got.Labels, want)
	}
}

// TestCloseReportsEveryFailure: a restore that fails is not hidden by the pod deletion's result;
// Close returns both, so that Run makes the exit code non-zero.
func TestCloseReportsEveryFailure(t *testing.T) {
	forbidden := func(res string) error {
		return apierrors.NewForbidden(schema.GroupResource{Resource: res}, "x", nil)
	}
	tests := []struct {
		name              string
		updateErr, delErr error
		want              []string
	}{
		{"both fail", forbidden("deployments"), forbidden("pods"), []string{"restoring deployment/web", "deleting proxy pod"}},
		{"restore fails, pod deleted", forbidden("deployments"), nil, []string{"restoring deployment/web"}},
		{"all well", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, cs, _ := healSession(t, "abc", nil)
			s.podMade = true
			cs.PrependReactor("update", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
				return tt.updateErr != nil, nil, tt.updateErr
			})
			cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				return tt.delErr != nil, nil, tt.delErr
			})
			err := s.Close()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Close = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Close = nil, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Close = %v, lacks %q", err, w)
				}
			}
			if again := s.Close(); again == nil || again.Error() != err.Error() {
				t.Errorf("a second Close = %v, want the same error", again)
			}
		})
	}
}
