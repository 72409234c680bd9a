package session

import (
	"context"
	"fmt"
	"strings"

	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Permission is one verb on one resource that a session needs in its namespace.
type Permission struct {
	Verb, Resource, Subresource string
}

// String writes the permission as kubectl auth can-i would: "create pods/portforward".
func (p Permission) String() string {
	if p.Subresource != "" {
		return p.Verb + " " + p.Resource + "/" + p.Subresource
	}
	return p.Verb + " " + p.Resource
}

// RunPermissions are what `kubectl tp run` needs: create, watch and delete its pod, and forward to it.
var RunPermissions = []Permission{
	{Verb: "create", Resource: "pods"},
	{Verb: "get", Resource: "pods"},
	{Verb: "watch", Resource: "pods"},
	{Verb: "delete", Resource: "pods"},
	{Verb: "create", Resource: "pods", Subresource: "portforward"},
}

// Preflight asks the API server (SelfSubjectAccessReview) whether the caller holds every
// permission in namespace ns, and returns one error naming all that are missing, before the
// session creates anything.
func Preflight(ctx context.Context, cs Clientset, ns string, perms []Permission) error {
	var missing []string
	for _, p := range perms {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{
			Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{
				Namespace: ns, Verb: p.Verb, Resource: p.Resource, Subresource: p.Subresource,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("checking permissions in namespace %q: %w", ns, err)
		}
		if !r.Status.Allowed {
			missing = append(missing, p.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing permission in namespace %q: %s; ask your cluster admin for a Role granting it (see README, \"What the cluster must allow\")",
			ns, strings.Join(missing, ", "))
	}
	return nil
}
