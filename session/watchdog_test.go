package session

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestStartWatchdog(t *testing.T) {
	cases := []struct {
		name       string
		forbidRBAC bool
	}{
		{"created, limited and owned", false},
		{"no right to create a Role: one warning, nothing left", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset()
			cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
				a.(k8stesting.CreateAction).GetObject().(*corev1.ServiceAccount).UID = "sa-uid"
				return false, nil, nil
			})
			if tc.forbidRBAC {
				cs.PrependReactor("create", "roles", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "roles"}, "tp-abc-watchdog", nil)
				})
			}
			var log bytes.Buffer
			s := &Session{opts: Options{Client: cs, Namespace: "ns", Image: "img", Stderr: &log}, ID: "abc", swapped: "web"}
			s.startWatchdog(context.Background())
			ctx := context.Background()
			_, saErr := cs.CoreV1().ServiceAccounts("ns").Get(ctx, "tp-abc-watchdog", metav1.GetOptions{})
			if tc.forbidRBAC {
				if s.watchdog || !apierrors.IsNotFound(saErr) {
					t.Errorf("watchdog %v, serviceaccount %v: a failed watchdog must leave nothing", s.watchdog, saErr)
				}
				if n := strings.Count(log.String(), "\n"); n != 1 || !strings.Contains(log.String(), "kubectl tp cleanup -n ns") {
					t.Errorf("want one warning naming cleanup, got:\n%s", log.String())
				}
				return
			}
			if !s.watchdog || saErr != nil || log.Len() != 0 {
				t.Fatalf("watchdog %v, serviceaccount %v, log %q", s.watchdog, saErr, log.String())
			}
			role, err := cs.RbacV1().Roles("ns").Get(ctx, "tp-abc-watchdog", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range role.Rules {
				if len(r.ResourceNames) == 0 {
					t.Errorf("rule %+v is not limited by resourceNames", r)
				}
				for _, v := range r.Verbs {
					if v == "*" || v == "list" || v == "watch" || v == "create" {
						t.Errorf("rule %+v grants %s", r, v)
					}
				}
			}
			if got := role.Rules[0].ResourceNames; len(got) != 1 || got[0] != "web" {
				t.Errorf("deployments rule names %v, want only web", got)
			}
			pod, err := cs.CoreV1().Pods("ns").Get(ctx, "tp-abc-watchdog", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			binding, err := cs.RbacV1().RoleBindings("ns").Get(ctx, "tp-abc-watchdog", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for kind, refs := range map[string][]metav1.OwnerReference{"role": role.OwnerReferences, "rolebinding": binding.OwnerReferences, "pod": pod.OwnerReferences} {
				if len(refs) != 1 || refs[0].Kind != "ServiceAccount" || refs[0].UID != "sa-uid" {
					t.Errorf("%s owner references %+v, want the watchdog's ServiceAccount", kind, refs)
				}
			}
			sc := pod.Spec.Containers[0].SecurityContext
			if pod.Spec.SecurityContext.RunAsNonRoot == nil || !*pod.Spec.SecurityContext.RunAsNonRoot || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 {
				t.Errorf("the watchdog pod is not restricted: %+v %+v", pod.Spec.SecurityContext, sc)
			}
			if pod.Labels[LabelManagedBy] == ManagedBy {
				t.Error("the watchdog pod carries the proxy pods' label: status and cleanup would take it for a session")
			}
			if args := strings.Join(pod.Spec.Containers[0].Args, " "); !strings.Contains(args, "-watchdog=web") || !strings.Contains(args, "-session=abc") {
				t.Errorf("watchdog args %q", args)
			}
		})
	}
}
