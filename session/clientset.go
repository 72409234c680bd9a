package session

import (
	"fmt"

	appsv1 "k8s.io/client-go/kubernetes/typed/apps/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	autoscalingv2 "k8s.io/client-go/kubernetes/typed/autoscaling/v2"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1 "k8s.io/client-go/kubernetes/typed/discovery/v1"
	rbacv1 "k8s.io/client-go/kubernetes/typed/rbac/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Clientset is the part of the Kubernetes API that kubectl-tp calls: pods, namespaces and
// ServiceAccounts (core/v1), Deployments, ReplicaSets, StatefulSets and DaemonSets (apps/v1), access
// reviews (authorization/v1), HorizontalPodAutoscalers (autoscaling/v2) and the swap watchdog's
// Role and RoleBinding (rbac/v1).
//
// Every kubernetes.Interface, the fake clientset of unit tests included, is a Clientset. What it
// leaves out is the typed clients of the ~50 other API groups: a binary that builds its clients with
// NewClientset does not link them, which makes kubectl-tp 8 MB (15%) smaller and, where the kernel
// maps executables in large page-cache folios, its resident memory about 4 MiB smaller.
type Clientset interface {
	// CoreV1 is the client of the core API group.
	CoreV1() corev1.CoreV1Interface
	// AppsV1 is the client of the apps/v1 API group.
	AppsV1() appsv1.AppsV1Interface
	// AuthorizationV1 is the client of the authorization.k8s.io/v1 API group.
	AuthorizationV1() authorizationv1.AuthorizationV1Interface
	// AutoscalingV2 is the client of the autoscaling/v2 API group.
	AutoscalingV2() autoscalingv2.AutoscalingV2Interface
	// RbacV1 is the client of the rbac.authorization.k8s.io/v1 API group.
	RbacV1() rbacv1.RbacV1Interface
	// DiscoveryV1 is the client of the discovery.k8s.io/v1 API group (EndpointSlices).
	DiscoveryV1() discoveryv1.DiscoveryV1Interface
}

// clientset is the Clientset NewClientset builds.
type clientset struct {
	core          *corev1.CoreV1Client
	apps          *appsv1.AppsV1Client
	authorization *authorizationv1.AuthorizationV1Client
	autoscaling   *autoscalingv2.AutoscalingV2Client
	rbac          *rbacv1.RbacV1Client
	discovery     *discoveryv1.DiscoveryV1Client
}

var _ Clientset = (*clientset)(nil)

func (c *clientset) CoreV1() corev1.CoreV1Interface                      { return c.core }
func (c *clientset) AppsV1() appsv1.AppsV1Interface                      { return c.apps }
func (c *clientset) AutoscalingV2() autoscalingv2.AutoscalingV2Interface { return c.autoscaling }
func (c *clientset) RbacV1() rbacv1.RbacV1Interface                      { return c.rbac }
func (c *clientset) DiscoveryV1() discoveryv1.DiscoveryV1Interface       { return c.discovery }
func (c *clientset) AuthorizationV1() authorizationv1.AuthorizationV1Interface {
	return c.authorization
}

// NewClientset returns a Clientset for cfg. Like kubernetes.NewForConfig, its API groups share one
// HTTP client (so one connection pool) and one client-side rate limiter built from cfg's QPS and
// Burst.
func NewClientset(cfg *rest.Config) (Clientset, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		if cfg.Burst <= 0 {
			return nil, fmt.Errorf("burst is required to be greater than 0 when RateLimiter is not set and QPS is set to greater than 0")
		}
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	var c clientset
	if c.core, err = corev1.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	if c.apps, err = appsv1.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	if c.authorization, err = authorizationv1.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	if c.autoscaling, err = autoscalingv2.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	if c.rbac, err = rbacv1.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	if c.discovery, err = discoveryv1.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	return &c, nil
}
