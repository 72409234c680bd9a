package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kubectl-tp/kubectl-tp/podshim/contract"
)

// Personal intercepts, the cluster side. An intercepted Service selects one router pod (podshim
// in router mode), shared by every session that intercepts it; the router sends each request to
// the session whose headers it carries, else to the real pods, through a headless shadow Service
// with the Service's own selector (so the router needs no API access to find them):
//
//	Service api (selector → router)  →  pod tp-router-api  →  session of x-dev=alice (its tunnel)
//	                                                       →  Service tp-shadow-api (headless,
//	                                                          api's own selector) → the real pods
//
// The Service's own selector is kept in an annotation while it is intercepted. The router's
// ServiceAccount owns the router pod, the shadow Service and the router's Role and RoleBinding,
// which let it restore that one Service and delete that ServiceAccount: deleting the
// ServiceAccount removes everything. The last session to leave restores the Service and deletes
// the ServiceAccount; when sessions die instead, the router does it itself once no intercept has
// been registered for routerGrace.
const (
	// AnnotationInterceptSelector holds, on an intercepted Service, its own selector (JSON).
	AnnotationInterceptSelector = "kubectl-tp.io/intercept-selector"
	// AnnotationInterceptRouter names, on an intercepted Service, its router pod.
	AnnotationInterceptRouter = "kubectl-tp.io/intercept-router"
	// LabelRouter marks a router pod; its value is the Service's name. An intercepted Service
	// selects exactly this label.
	LabelRouter = "kubectl-tp.io/router"
	// RouterManagedBy is LabelManagedBy's value on the router and its objects.
	RouterManagedBy = "kubectl-tp-router"
	// routerGrace is how long a router serves with no intercept registered before it restores its
	// Service (after its first registration; routerStartGrace before it).
	routerGrace      = 10 * time.Second
	routerStartGrace = 2 * time.Minute
)

// InterceptSpec is --intercept SERVICE[:PORT] with its --header matches.
type InterceptSpec struct {
	// Service is the Service to intercept, in the session's namespace.
	Service string
	// Port, when set, is the one Service port (number or name) taken; otherwise every TCP port.
	Port string
	// Headers are NAME=VALUE matches, all of which a request must carry; none takes every
	// request and every connection of the ports.
	Headers []string
}

// String is SERVICE[:PORT] and the headers, comma-separated, as status shows them: e.g.
// "api:8080,x-dev=alice", or "api,all" without headers.
func (s InterceptSpec) String() string {
	out := s.Service
	if s.Port != "" {
		out += ":" + s.Port
	}
	if len(s.Headers) == 0 {
		return out + ",all"
	}
	return out + "," + strings.Join(s.Headers, ",")
}

// ParseIntercept parses --intercept SERVICE[:PORT].
func ParseIntercept(v string) (InterceptSpec, error) {
	svc, port, _ := strings.Cut(v, ":")
	if errs := validationName(svc); errs != "" || strings.Contains(port, ":") {
		return InterceptSpec{}, fmt.Errorf("--intercept %q: want SERVICE[:PORT], e.g. --intercept api:8080 (%s)", v, errs)
	}
	return InterceptSpec{Service: svc, Port: port}, nil
}

// validationName returns why s is not a Service name, or "".
func validationName(s string) string {
	if s == "" || len(s) > 63 {
		return "a Service name has 1 to 63 characters"
	}
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') || (r == '-' && (i == 0 || i == len(s)-1)) {
			return "a Service name has lower-case letters, digits and inner dashes"
		}
	}
	return ""
}

// routerPort is one TCP port of an intercepted Service, as the router serves it.
type routerPort struct {
	// Name and Port are the Service port's; Target is the number the pods listen on and
	// TargetName the targetPort's name when it is named.
	Name       string
	Port       int32
	Target     int
	TargetName string
}

// interceptPlan is what intercepting one Service needs, read from the cluster.
type interceptPlan struct {
	ns, service string
	// selector is the Service's own selector (from the annotation when already intercepted).
	selector map[string]string
	// ports are every TCP port of the Service (the router serves them all); taken are the
	// target ports this session takes.
	ports []routerPort
	taken []int
	// workload is what the session stands in for: the owner of a pod the Service selects.
	workload Target
	// intercepted: the Service already selects a router.
	intercepted bool
}

// routerName and shadowName name the router pod (also its ServiceAccount, Role and RoleBinding)
// and the shadow Service of Service svc. A name that would pass 63 characters is shortened and
// given a hash of svc.
func routerName(svc string) string { return shortName("tp-router-", svc, "") }
func shadowName(svc string) string { return shortName("", svc, contract.ShadowSuffix) }

func shortName(prefix, svc, suffix string) string {
	if len(prefix)+len(svc)+len(suffix) <= 63 {
		return prefix + svc + suffix
	}
	sum := sha256.Sum256([]byte(svc))
	return prefix + svc[:63-len(prefix)-len(suffix)-9] + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// planIntercept reads Service spec.Service and what it selects; its errors are one line each
// and name the fix.
func planIntercept(ctx context.Context, cs Clientset, ns string, spec InterceptSpec) (*interceptPlan, error) {
	svc, err := cs.CoreV1().Services(ns).Get(ctx, spec.Service, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("service/%s not found in namespace %s (kubectl get services -n %s lists them)", spec.Service, ns, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("reading service/%s: %w", spec.Service, cleanAPIError(err))
	}
	p := &interceptPlan{ns: ns, service: spec.Service, selector: svc.Spec.Selector}
	if raw, ok := svc.Annotations[AnnotationInterceptSelector]; ok {
		p.intercepted = true
		p.selector = nil // Unmarshal would merge into the router's selector
		if err := json.Unmarshal([]byte(raw), &p.selector); err != nil {
			return nil, fmt.Errorf("service/%s: its %s annotation is not a selector (%v); restore it with kubectl tp cleanup -n %s", spec.Service, AnnotationInterceptSelector, err, ns)
		}
	}
	if len(p.selector) == 0 {
		return nil, fmt.Errorf("service/%s has no selector (its endpoints are managed by hand), so it cannot be intercepted", spec.Service)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(p.selector).String()})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of service/%s: %w", spec.Service, cleanAPIError(err))
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil && pods.Items[i].Labels[LabelManagedBy] != ManagedBy {
			pod = &pods.Items[i]
			break
		}
	}
	if pod == nil {
		return nil, fmt.Errorf("service/%s selects no pod, so there is no workload to stand in for (is it scaled to 0?)", spec.Service)
	}
	var names []string
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			return nil, fmt.Errorf("service/%s has a %s port (%s), which an intercept would take away from its pods (the router carries TCP only), so it cannot be intercepted", spec.Service, sp.Protocol, portName(sp))
		}
		rp := routerPort{Name: sp.Name, Port: sp.Port}
		switch {
		case sp.TargetPort.Type == intstr.String:
			rp.TargetName = sp.TargetPort.StrVal
			rp.Target = namedPort(pod, rp.TargetName)
			if rp.Target == 0 {
				return nil, fmt.Errorf("service/%s port %d targets the named port %q, which pod %s does not declare", spec.Service, sp.Port, rp.TargetName, pod.Name)
			}
		case sp.TargetPort.IntVal != 0:
			rp.Target = int(sp.TargetPort.IntVal)
		default:
			rp.Target = int(sp.Port)
		}
		p.ports = append(p.ports, rp)
		names = append(names, portName(sp))
		if spec.Port == "" || spec.Port == sp.Name || spec.Port == strconv.Itoa(int(sp.Port)) {
			p.taken = append(p.taken, rp.Target)
		}
	}
	if len(p.ports) == 0 {
		return nil, fmt.Errorf("service/%s has no port to intercept", spec.Service)
	}
	if len(p.taken) == 0 {
		return nil, fmt.Errorf("service/%s has no port %s; its TCP ports: %s", spec.Service, spec.Port, strings.Join(names, ", "))
	}
	p.workload = workloadOf(ctx, cs, pod)
	return p, nil
}

func portName(sp corev1.ServicePort) string {
	if sp.Name != "" {
		return fmt.Sprintf("%d (%s)", sp.Port, sp.Name)
	}
	return strconv.Itoa(int(sp.Port))
}

// namedPort is the number of pod's container port called name, or 0.
func namedPort(pod *corev1.Pod, name string) int {
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
				return int(cp.ContainerPort)
			}
		}
	}
	return 0
}

// workloadOf is the workload that runs pod: its controller (a ReplicaSet's Deployment when it
// has one), else the pod itself.
func workloadOf(ctx context.Context, cs Clientset, pod *corev1.Pod) Target {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return Target{Kind: "pods", Name: pod.Name}
	}
	switch ref.Kind {
	case "ReplicaSet":
		rs, err := cs.AppsV1().ReplicaSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if d := metav1.GetControllerOf(rs); d != nil && d.Kind == "Deployment" {
				return Target{Kind: "deployments", Name: d.Name}
			}
		}
		return Target{Kind: "replicasets", Name: ref.Name}
	case "StatefulSet":
		return Target{Kind: "statefulsets", Name: ref.Name}
	case "DaemonSet":
		return Target{Kind: "daemonsets", Name: ref.Name}
	}
	return Target{Kind: "pods", Name: pod.Name}
}

// routerPortsArg is the router's port list: TARGET[,TARGET…].
func (p *interceptPlan) routerPortsArg() string {
	var out []string
	for _, rp := range p.ports {
		out = append(out, strconv.Itoa(rp.Target))
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), ",")
}

// routerPod is a running router: its pod's name, the token of its tunnel and the pod's IP (for
// the direct path).
type routerPod struct{ name, token, ip string }

// ensureRouter makes sure Service p.service has a running router: it creates the router's
// ServiceAccount, Role, RoleBinding, shadow Service and pod unless another session did, and waits
// until the pod is ready. It returns the router pod's name, token and IP. A router it created is
// removed again when anything fails; the Service itself is not touched (see pointAtRouter, once
// an intercept is registered).
func ensureRouter(ctx context.Context, cs Clientset, p *interceptPlan, image, session string, logf func(string, ...any)) (routerPod, error) {
	ns, name := p.ns, routerName(p.service)
	var sa *corev1.ServiceAccount
	created := false
	for attempt := 0; sa == nil; attempt++ {
		got, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: routerLabels(p.service)},
		}, createOptions)
		switch {
		case err == nil:
			sa, created = got, true
		case apierrors.IsAlreadyExists(err):
			got, err = cs.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
			switch {
			case err == nil && got.DeletionTimestamp == nil:
				sa = got
			case err == nil:
				// A retired router's, on its way out: wait, then create it anew.
				if err := waitGone(ctx, func(ctx context.Context) error {
					_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
					return err
				}); err != nil {
					return routerPod{}, fmt.Errorf("waiting for the old router of service/%s to go: %w", p.service, err)
				}
			case !apierrors.IsNotFound(err) || attempt == 5:
				return routerPod{}, fmt.Errorf("reading serviceaccount/%s: %w", name, cleanAPIError(err))
			}
			// Deleted in between (a router retiring): create it anew.
		default:
			if ctx.Err() != nil {
				// The create may have reached the API server: leave nothing behind.
				_ = deleteRouter(cs, ns, p.service)
			}
			return routerPod{}, fmt.Errorf("creating serviceaccount/%s: %w", name, cleanAPIError(err))
		}
	}
	fail := func(err error) (routerPod, error) {
		if created {
			_ = deleteRouter(cs, ns, p.service)
		}
		return routerPod{}, err
	}
	if created {
		logf("starting the router of service/%s (pod %s)", p.service, name)
		owned := metav1.ObjectMeta{Name: name, Labels: routerLabels(p.service), OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ServiceAccount", Name: sa.Name, UID: sa.UID,
		}}}
		if err := clearRouterLeftovers(ctx, cs, p, sa.UID); err != nil {
			return fail(err)
		}
		if err := createRouterObjects(ctx, cs, p, owned, image, session); err != nil {
			return fail(err)
		}
	}
	// Another session may still be creating the pod, which comes last (a pod of a retired router,
	// not yet collected, is not it).
	for {
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && ownedBy(pod.ObjectMeta, sa.UID) {
			break
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return fail(fmt.Errorf("reading pod/%s: %w", name, cleanAPIError(err)))
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("the router of service/%s (pod %s) was not created in time", p.service, name))
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := waitPodReady(ctx, cs, ns, name); err != nil {
		return fail(fmt.Errorf("the router of service/%s (pod %s) did not become ready: %w", p.service, name, err))
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fail(fmt.Errorf("reading pod/%s: %w", name, cleanAPIError(err)))
	}
	token := ""
	for _, e := range pod.Spec.Containers[0].Env {
		if e.Name == contract.TokenVar {
			token = e.Value
		}
	}
	return routerPod{name: name, token: token, ip: pod.Status.PodIP}, nil
}

// clearRouterLeftovers deletes what a retired router left under the names a new router takes
// (its pod, Role, RoleBinding and shadow Service, owned by the retired router's ServiceAccount,
// which the garbage collector removes only some time after that account), and waits until they
// are gone: creating them anew meanwhile fails with "object is being deleted". Objects owned by
// owner (the new router's ServiceAccount) are kept.
func clearRouterLeftovers(ctx context.Context, cs Clientset, p *interceptPlan, owner types.UID) error {
	ns, name, shadow := p.ns, routerName(p.service), shadowName(p.service)
	bg := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}
	kinds := []struct {
		what string
		get  func(context.Context) (metav1.ObjectMeta, error)
		del  func(context.Context) error
	}{
		{"pod/" + name, func(ctx context.Context) (metav1.ObjectMeta, error) {
			o, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			return objectMeta(o, err)
		}, func(ctx context.Context) error {
			return cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}},
		{"role/" + name, func(ctx context.Context) (metav1.ObjectMeta, error) {
			o, err := cs.RbacV1().Roles(ns).Get(ctx, name, metav1.GetOptions{})
			return objectMeta(o, err)
		}, func(ctx context.Context) error { return cs.RbacV1().Roles(ns).Delete(ctx, name, bg) }},
		{"rolebinding/" + name, func(ctx context.Context) (metav1.ObjectMeta, error) {
			o, err := cs.RbacV1().RoleBindings(ns).Get(ctx, name, metav1.GetOptions{})
			return objectMeta(o, err)
		}, func(ctx context.Context) error { return cs.RbacV1().RoleBindings(ns).Delete(ctx, name, bg) }},
		{"service/" + shadow, func(ctx context.Context) (metav1.ObjectMeta, error) {
			o, err := cs.CoreV1().Services(ns).Get(ctx, shadow, metav1.GetOptions{})
			return objectMeta(o, err)
		}, func(ctx context.Context) error { return cs.CoreV1().Services(ns).Delete(ctx, shadow, bg) }},
	}
	for _, k := range kinds {
		m, err := k.get(ctx)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", k.what, cleanAPIError(err))
		}
		if ownedBy(m, owner) {
			continue
		}
		if m.DeletionTimestamp == nil {
			if err := k.del(ctx); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting %s, left by an earlier router: %w", k.what, cleanAPIError(err))
			}
		}
		if err := waitGone(ctx, func(ctx context.Context) error { _, err := k.get(ctx); return err }); err != nil {
			return fmt.Errorf("waiting for %s, left by an earlier router, to go: %w", k.what, err)
		}
	}
	return nil
}

// objectMeta returns the metadata of o, a typed object from a Get, or the Get's error.
func objectMeta[T interface{ GetObjectMeta() metav1.Object }](o T, err error) (metav1.ObjectMeta, error) {
	if err != nil {
		return metav1.ObjectMeta{}, err
	}
	m := o.GetObjectMeta()
	return metav1.ObjectMeta{Name: m.GetName(), UID: m.GetUID(), DeletionTimestamp: m.GetDeletionTimestamp(), OwnerReferences: m.GetOwnerReferences()}, nil
}

// ownedBy reports whether m names owner among its owners.
func ownedBy(m metav1.ObjectMeta, owner types.UID) bool {
	return slices.ContainsFunc(m.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == owner })
}

// waitGone polls get (every 200 ms, bounded by ctx) until it returns NotFound.
func waitGone(ctx context.Context, get func(context.Context) error) error {
	for {
		err := get(ctx)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return cleanAPIError(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// routerLabels are the labels of the router pod and its objects.
func routerLabels(svc string) map[string]string {
	return map[string]string{LabelManagedBy: RouterManagedBy, LabelRouter: svc}
}

// createRouterObjects creates the router's Role, RoleBinding, shadow Service and pod, all owned
// by its ServiceAccount.
func createRouterObjects(ctx context.Context, cs Clientset, p *interceptPlan, meta metav1.ObjectMeta, image, session string) error {
	ns, name, shadow := p.ns, meta.Name, shadowName(p.service)
	role := &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{p.service}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, ResourceNames: []string{name}, Verbs: []string{"delete"}},
	}}
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, role, createOptions); err != nil {
		return fmt.Errorf("creating role/%s: %w", name, cleanAPIError(err))
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: meta,
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, binding, createOptions); err != nil {
		return fmt.Errorf("creating rolebinding/%s: %w", name, cleanAPIError(err))
	}
	shadowMeta := meta
	shadowMeta.Name = shadow
	svc := &corev1.Service{ObjectMeta: shadowMeta, Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone,
		Selector:  p.selector,
	}}
	seenTarget := map[int]bool{}
	for _, rp := range p.ports {
		if !seenTarget[rp.Target] {
			seenTarget[rp.Target] = true
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: rp.Name, Port: int32(rp.Target), TargetPort: intstr.FromInt(rp.Target)})
		}
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, createOptions); err != nil {
		return fmt.Errorf("creating service/%s: %w", shadow, cleanAPIError(err))
	}
	pod := buildPod(podSpec{Name: name, Namespace: ns, SessionID: session, Owner: owner(), Image: image, Token: randomHex(16), IdleTimeout: routerGrace, Direct: true})
	pod.ObjectMeta.Labels = routerLabels(p.service)
	pod.ObjectMeta.OwnerReferences = meta.OwnerReferences
	pod.Spec.ServiceAccountName = name
	pod.Spec.AutomountServiceAccountToken = ptr.To(true)
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	c := &pod.Spec.Containers[0]
	c.Args = append(c.Args,
		contract.Arg(contract.FlagRouterPorts, p.routerPortsArg()),
		contract.Arg(contract.FlagRouterShadow, shadow),
		contract.Arg(contract.FlagRouterService, p.service),
		contract.Arg(contract.FlagServiceAccount, name),
		contract.Arg(contract.FlagGrace, routerGrace),
	)
	seen := map[int]bool{}
	for _, rp := range p.ports {
		if seen[rp.Target] {
			continue
		}
		seen[rp.Target] = true
		// A named targetPort resolves on the router by the same name.
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: rp.TargetName, ContainerPort: int32(rp.Target), Protocol: corev1.ProtocolTCP})
		if rp.Target < 1024 {
			// The namespaced sysctl Pod Security "restricted" allows, for a non-root router.
			sc := pod.Spec.SecurityContext
			if !slices.ContainsFunc(sc.Sysctls, func(s corev1.Sysctl) bool { return s.Name == "net.ipv4.ip_unprivileged_port_start" }) {
				sc.Sysctls = append(sc.Sysctls, corev1.Sysctl{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"})
			}
		}
	}
	// Ready (and so selected) once it listens.
	c.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(p.ports[0].Target)}},
		PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1,
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, createOptions); err != nil {
		return fmt.Errorf("creating pod/%s: %w", name, cleanAPIError(err))
	}
	return nil
}

// pointAtRouter makes Service p.service select its router, recording its own selector, unless
// it already does.
func pointAtRouter(ctx context.Context, cs Clientset, p *interceptPlan) error {
	for range 5 {
		svc, err := cs.CoreV1().Services(p.ns).Get(ctx, p.service, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading service/%s: %w", p.service, cleanAPIError(err))
		}
		router := map[string]string{LabelRouter: p.service}
		if _, ok := svc.Annotations[AnnotationInterceptSelector]; ok {
			if maps.Equal(svc.Spec.Selector, router) {
				return nil
			}
			// Its own selector is recorded, but something set another since (a revert): the
			// intercept needs the router's back.
		} else {
			own, _ := json.Marshal(svc.Spec.Selector)
			if svc.Annotations == nil {
				svc.Annotations = map[string]string{}
			}
			svc.Annotations[AnnotationInterceptSelector] = string(own)
			svc.Annotations[AnnotationInterceptRouter] = routerName(p.service)
		}
		svc.Spec.Selector = router
		_, err = cs.CoreV1().Services(p.ns).Update(ctx, svc, metav1.UpdateOptions{FieldManager: "kubectl-tp"})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("pointing service/%s at its router: %w", p.service, cleanAPIError(err))
		}
		return nil
	}
	return fmt.Errorf("pointing service/%s at its router: it kept changing; run the command again", p.service)
}

// restoreService gives Service svc its own selector back and removes the intercept annotations,
// if it has them; it reports whether it changed the Service.
func restoreService(ctx context.Context, cs Clientset, ns, name string) (bool, error) {
	for range 5 {
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		raw, ok := svc.Annotations[AnnotationInterceptSelector]
		if !ok {
			return false, nil
		}
		var own map[string]string
		if err := json.Unmarshal([]byte(raw), &own); err != nil {
			return false, fmt.Errorf("service/%s: its %s annotation is not a selector: %v", name, AnnotationInterceptSelector, err)
		}
		// A selector someone else set meanwhile stays; only the record goes.
		if maps.Equal(svc.Spec.Selector, map[string]string{LabelRouter: name}) {
			svc.Spec.Selector = own
		}
		delete(svc.Annotations, AnnotationInterceptSelector)
		delete(svc.Annotations, AnnotationInterceptRouter)
		if len(svc.Annotations) == 0 {
			svc.Annotations = nil
		}
		_, err = cs.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{FieldManager: "kubectl-tp"})
		if apierrors.IsConflict(err) {
			continue
		}
		return err == nil, err
	}
	return false, errors.New("it kept changing")
}

// deleteRouter deletes the router's ServiceAccount (the garbage collector removes its Role,
// RoleBinding and shadow Service) and its pod at once.
func deleteRouter(cs Clientset, ns, svc string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	name := routerName(svc)
	err := cs.CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if apierrors.IsNotFound(err) {
		err = nil
	}
	perr := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if apierrors.IsNotFound(perr) {
		perr = nil
	}
	return errors.Join(err, perr)
}

// interceptedServices lists the Services of ns that point at a router, with their routers.
func interceptedServices(ctx context.Context, cs Clientset, ns string) (map[string]string, error) {
	list, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range list.Items {
		if _, ok := s.Annotations[AnnotationInterceptSelector]; ok {
			out[s.Name] = s.Annotations[AnnotationInterceptRouter]
		}
	}
	return out, nil
}
