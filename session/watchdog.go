package session

import (
	"context"
	"fmt"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/contract"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The swap watchdog: a pod per swap that restores the Deployment when the session goes silent
// (its laptop died: the proxy pod ends after --idle-timeout without a heartbeat). See
// podshim.Watchdog for the pod side.
const (
	// WatchdogManagedBy is the LabelManagedBy value of the watchdog's objects (not ManagedBy: they
	// are not proxy pods).
	WatchdogManagedBy = "kubectl-tp-watchdog"
	// watchdogGrace is how long the proxy pod must be gone before the watchdog restores: a
	// session that heals its pod moves the swap record within a second or two.
	watchdogGrace = 10 * time.Second
	// watchdogPods is how many proxy pod names (the first and its replacements) the watchdog's
	// Role lets it read.
	watchdogPods = 32
)

// watchdogName is the name of the watchdog's ServiceAccount, Role, RoleBinding and pod.
func watchdogName(session string) string { return "tp-" + session + "-watchdog" }

// startWatchdog creates the watchdog of the swap of deployment s.swapped: a ServiceAccount, a Role
// limited by resourceNames to that Deployment (get, update), the session's proxy pods (get, delete) and
// the ServiceAccount itself (delete), a RoleBinding and the pod; all but the ServiceAccount are
// owned by it, so deleting the ServiceAccount (the watchdog does when it is done, Close does at
// the end) removes everything. When the user may not create them, one warning says that crash
// recovery needs `kubectl tp cleanup`, and the session goes on.
func (s *Session) startWatchdog(ctx context.Context) {
	err := s.createWatchdog(ctx)
	if err == nil {
		s.watchdog = true
		return
	}
	s.deleteWatchdog()
	s.logf("warning: no swap watchdog (%v); if this session dies, restore deployment/%s with: kubectl tp cleanup -n %s",
		cleanAPIError(err), s.swapped, s.opts.Namespace)
}

func (s *Session) createWatchdog(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ns, name := s.opts.Namespace, watchdogName(s.ID)
	labels := map[string]string{LabelManagedBy: WatchdogManagedBy, LabelSession: s.ID}
	sa, err := s.opts.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, createOptions)
	if err != nil {
		return fmt.Errorf("creating serviceaccount/%s: %w", name, err)
	}
	owned := metav1.ObjectMeta{Name: name, Labels: labels, OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "ServiceAccount", Name: sa.Name, UID: sa.UID,
	}}}
	pods := make([]string, 0, watchdogPods)
	pods = append(pods, "tp-"+s.ID)
	for i := 1; i < watchdogPods; i++ {
		pods = append(pods, fmt.Sprintf("tp-%s-%d", s.ID, i))
	}
	role := &rbacv1.Role{ObjectMeta: owned, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{s.swapped}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, ResourceNames: pods, Verbs: []string{"get", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, ResourceNames: []string{name}, Verbs: []string{"delete"}},
	}}
	if _, err := s.opts.Client.RbacV1().Roles(ns).Create(ctx, role, createOptions); err != nil {
		return fmt.Errorf("creating role/%s: %w", name, err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: owned,
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
	}
	if _, err := s.opts.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, createOptions); err != nil {
		return fmt.Errorf("creating rolebinding/%s: %w", name, err)
	}
	pod := buildPod(podSpec{Name: name, Namespace: ns, SessionID: s.ID, Owner: owner(), Image: s.opts.Image})
	pod.ObjectMeta.Labels = labels
	pod.ObjectMeta.OwnerReferences = owned.OwnerReferences
	pod.Spec.ServiceAccountName = name
	pod.Spec.AutomountServiceAccountToken = ptr.To(true)
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	c := &pod.Spec.Containers[0]
	c.Env = nil
	c.Args = []string{contract.Arg(contract.FlagWatchdog, s.swapped), contract.Arg(contract.FlagSession, s.ID),
		contract.Arg(contract.FlagServiceAccount, name), contract.Arg(contract.FlagGrace, watchdogGrace)}
	if _, err := s.opts.Client.CoreV1().Pods(ns).Create(ctx, pod, createOptions); err != nil {
		return fmt.Errorf("creating pod/%s: %w", name, err)
	}
	return nil
}

// deleteWatchdog deletes the watchdog's ServiceAccount; the garbage collector removes the rest.
func (s *Session) deleteWatchdog() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = s.opts.Client.CoreV1().ServiceAccounts(s.opts.Namespace).Delete(ctx, watchdogName(s.ID),
		metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	// Its pod has nothing left to do: do not leave it to the garbage collector's pace.
	_ = s.opts.Client.CoreV1().Pods(s.opts.Namespace).Delete(ctx, watchdogName(s.ID),
		metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
}
