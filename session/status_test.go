package session

import (
	"context"
	"errors"
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
)

func TestList(t *testing.T) {
	pod := func(name, session, managedBy string, phase corev1.PodPhase, age time.Duration) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", CreationTimestamp: metav1.NewTime(time.Now().Add(-age)),
				Labels: map[string]string{LabelManagedBy: managedBy, LabelSession: session}, Annotations: map[string]string{AnnotationOwner: "me@laptop"}},
			Status: corev1.PodStatus{Phase: phase},
		}
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Annotations: map[string]string{AnnotationSwapPod: "tp-a-1"}}}
	cs := fake.NewClientset(
		pod("tp-a-1", "a", ManagedBy, corev1.PodRunning, time.Minute),
		pod("tp-b", "b", ManagedBy, corev1.PodSucceeded, 2*time.Minute),
		pod("tp-a-watchdog", "a", WatchdogManagedBy, corev1.PodRunning, time.Minute),
		dep,
	)
	got, err := List(context.Background(), cs, "ns")
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{
		{Session: "b", Pod: "tp-b", Phase: "Succeeded", Alive: false},
		{Session: "a", Pod: "tp-a-1", Phase: "Running", Alive: true, Swapped: "web", Watchdog: "Running"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sessions (%+v), want %d: the watchdog pod is not a session", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Session != w.Session || g.Pod != w.Pod || g.Phase != w.Phase || g.Alive != w.Alive || g.Swapped != w.Swapped || g.Watchdog != w.Watchdog || g.Owner != "me@laptop" {
			t.Errorf("session %d: got %+v, want %+v", i, g, w)
		}
	}
}

// TestListIncomplete: a forbidden Deployments or watchdog list does not silently show no swaps:
// the sessions come back with an error naming the column and the permission.
func TestListIncomplete(t *testing.T) {
	tests := []struct {
		name, verb, resource, want string
	}{
		{"deployments forbidden", "list", "deployments", "SWAPPED column"},
		{"watchdog pods forbidden", "list", "pods", "WATCHDOG column"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tp-a", Namespace: "ns", Labels: map[string]string{LabelManagedBy: ManagedBy, LabelSession: "a"}}}
			cs := fake.NewClientset(p)
			cs.PrependReactor(tt.verb, tt.resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
				if tt.resource == "pods" && !strings.Contains(a.(k8stesting.ListAction).GetListRestrictions().Labels.String(), WatchdogManagedBy) {
					return false, nil, nil // the sessions themselves can be listed
				}
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: tt.resource}, "", nil)
			})
			got, err := List(context.Background(), cs, "ns")
			if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("List error = %v, want ErrIncomplete naming the %s", err, tt.want)
			}
			if len(got) != 1 || got[0].Pod != "tp-a" {
				t.Errorf("the sessions must still be returned: %+v", got)
			}
		})
	}
}
