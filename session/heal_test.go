package session

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-tp/kubectl-tp/forward"
)

func TestLostReason(t *testing.T) {
	now := metav1.Now()
	cases := []struct {
		name string
		pod  corev1.Pod
		want string
	}{
		{"running", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, ""},
		{"pending", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, ""},
		{"being deleted", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, "is being deleted"},
		{"evicted", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}}, "failed (Evicted)"},
		{"failed", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, "failed"},
		{"idle-ended", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, "ended (it had not heard from this session for --idle-timeout)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := lostReason(&tc.pod); got != tc.want {
				t.Errorf("lostReason = %q, want %q", got, tc.want)
			}
		})
	}
}

// healSession is a session whose proxy pod tp-abc is gone, with deployment web swapped by it.
func healSession(t *testing.T, swappedBy string, createErr error) (*Session, *fake.Clientset, *bytes.Buffer) {
	t.Helper()
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Annotations: map[string]string{
		AnnotationSwapSession: swappedBy, AnnotationSwapPod: "tp-abc", AnnotationSwapReplicas: "2",
	}}}
	cs := fake.NewClientset(dep)
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if createErr != nil {
			return true, nil, createErr
		}
		// The kubelet's part: the new pod runs at once.
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		return false, nil, nil
	})
	var log bytes.Buffer
	tpl := buildPod(podSpec{Name: "tp-abc", Namespace: "ns", SessionID: "abc", Owner: "me", Image: "img", Token: "t", IdleTimeout: 30 * time.Second})
	s := &Session{
		opts:        Options{Client: cs, Namespace: "ns", StartTimeout: 10 * time.Second, Stderr: &log},
		ID:          "abc",
		PodName:     "tp-abc",
		podTemplate: tpl,
		swapped:     "web",
		path:        podPath{fwd: &forward.Forwarder{Namespace: "ns", Pod: "tp-abc", Port: TunnelPort}},
		lost:        make(chan struct{}),
	}
	return s, cs, &log
}

func TestReplacePod(t *testing.T) {
	s, cs, log := healSession(t, "abc", nil)
	if err := s.heal(context.Background(), "tp-abc", "was deleted", time.Now()); err != nil {
		t.Fatal(err)
	}
	if s.currentPod() != "tp-abc-1" {
		t.Fatalf("current pod %q, want tp-abc-1", s.currentPod())
	}
	p, err := cs.CoreV1().Pods("ns").Get(context.Background(), "tp-abc-1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no replacement pod: %v", err)
	}
	if p.Labels[LabelSession] != "abc" || p.Spec.Containers[0].Image != "img" {
		t.Errorf("the replacement is not a copy of the first pod: labels %v, image %q", p.Labels, p.Spec.Containers[0].Image)
	}
	d, _ := cs.AppsV1().Deployments("ns").Get(context.Background(), "web", metav1.GetOptions{})
	if got := d.Annotations[AnnotationSwapPod]; got != "tp-abc-1" {
		t.Errorf("the swap record names pod %q, want the replacement tp-abc-1", got)
	}
	// A second report of the same loss (the watch and the heartbeat both see it) does nothing.
	if err := s.heal(context.Background(), "tp-abc", "was deleted", time.Now()); err != nil || s.currentPod() != "tp-abc-1" {
		t.Errorf("a repeated loss made another pod: %v, current %q", err, s.currentPod())
	}
	for _, want := range []string{"proxy pod tp-abc was deleted; starting tp-abc-1", "new proxy pod tp-abc-1 serves the session"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestReplacePodFails(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "tp-abc-1", nil)
	cases := []struct {
		name      string
		swappedBy string
		createErr error
		want      string
	}{
		{"no permission", "abc", forbidden, "no replacement can be created"},
		{"swap restored by someone else", "other", nil, "was restored meanwhile"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := healSession(t, tc.swappedBy, tc.createErr)
			err := s.heal(context.Background(), "tp-abc", "was deleted", time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("heal = %v, want an error containing %q", err, tc.want)
			}
			s.end(err)
			select {
			case <-s.Lost():
			default:
				t.Fatal("Lost is not closed after end")
			}
			if s.LostErr() != err {
				t.Errorf("LostErr = %v, want %v", s.LostErr(), err)
			}
		})
	}
}
