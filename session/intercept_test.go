package session

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// interceptObjects is a Deployment's ReplicaSet and pod behind Service api, which has a named
// target port and a numbered one, and behind Service mixed, which also has a UDP port.
func interceptObjects() []runtime.Object {
	ctl := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true), APIVersion: "apps/v1"}}
	}
	return []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns", Annotations: map[string]string{"keep": "me"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
				{Name: "grpc", Port: 9090},
			}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "mixed", Namespace: "ns"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{
				{Name: "dns-tcp", Port: 53}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "manual", Namespace: "ns"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "none"}}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "api-5d8", Namespace: "ns", OwnerReferences: ctl("Deployment", "api")}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-5d8-x", Namespace: "ns", Labels: map[string]string{"app": "api"}, OwnerReferences: ctl("ReplicaSet", "api-5d8")},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}}}}},
	}
}

func TestPlanIntercept(t *testing.T) {
	cases := []struct {
		name, svc, port string
		taken           []int
		err             string
	}{
		{name: "every TCP port", svc: "api", taken: []int{8080, 9090}},
		{name: "port by name", svc: "api", port: "http", taken: []int{8080}},
		{name: "port by number", svc: "api", port: "9090", taken: []int{9090}},
		{name: "no such port", svc: "api", port: "443", err: "service/api has no port 443; its TCP ports: 80 (http), 9090 (grpc)"},
		{name: "a UDP port", svc: "mixed", err: "service/mixed has a UDP port (53 (dns)), which an intercept would take away from its pods"},
		{name: "no such Service", svc: "nope", err: "service/nope not found in namespace ns"},
		{name: "no selector", svc: "manual", err: "service/manual has no selector"},
		{name: "no pod", svc: "empty", err: "service/empty selects no pod"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cs := fake.NewClientset(interceptObjects()...)
			p, err := planIntercept(context.Background(), cs, "ns", InterceptSpec{Service: c.svc, Port: c.port})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.taken) != len(c.taken) || p.taken[0] != c.taken[0] || p.taken[len(p.taken)-1] != c.taken[len(c.taken)-1] {
				t.Errorf("taken %v, want %v", p.taken, c.taken)
			}
			if p.workload != (Target{Kind: "deployments", Name: "api"}) {
				t.Errorf("workload %v, want deployment/api", p.workload)
			}
			if got := p.routerPortsArg(); got != "8080,9090" {
				t.Errorf("router ports %q, want every TCP target port", got)
			}
		})
	}
}

// TestPointAtRouterAndRestore checks that the Service is pointed at its router once (a second
// session changes nothing), that a plan made while it is intercepted still finds the real pods,
// and that the restore gives back exactly the object it was.
func TestPointAtRouterAndRestore(t *testing.T) {
	cs := fake.NewClientset(interceptObjects()...)
	ctx := context.Background()
	before, _ := cs.CoreV1().Services("ns").Get(ctx, "api", metav1.GetOptions{})
	p, err := planIntercept(ctx, cs, "ns", InterceptSpec{Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := pointAtRouter(ctx, cs, p); err != nil {
			t.Fatal(err)
		}
	}
	during, _ := cs.CoreV1().Services("ns").Get(ctx, "api", metav1.GetOptions{})
	if during.Spec.Selector[LabelRouter] != "api" || len(during.Spec.Selector) != 1 {
		t.Fatalf("selector while intercepted: %v", during.Spec.Selector)
	}
	again, err := planIntercept(ctx, cs, "ns", InterceptSpec{Service: "api"})
	if err != nil || !again.intercepted || again.selector["app"] != "api" {
		t.Fatalf("plan of an intercepted Service: %+v, %v", again, err)
	}
	changed, err := restoreService(ctx, cs, "ns", "api")
	if err != nil || !changed {
		t.Fatalf("restore: %v, %v", changed, err)
	}
	after, _ := cs.CoreV1().Services("ns").Get(ctx, "api", metav1.GetOptions{})
	// What the API server itself keeps (the version, who wrote which field) may differ.
	after.ResourceVersion, before.ResourceVersion = "", ""
	after.ManagedFields, before.ManagedFields = nil, nil
	if after.String() != before.String() {
		t.Errorf("restored Service differs:\nbefore %v\nafter  %v", before, after)
	}
	if changed, err := restoreService(ctx, cs, "ns", "api"); changed || err != nil {
		t.Errorf("a second restore changed something: %v %v", changed, err)
	}
}

func TestParseIntercept(t *testing.T) {
	for _, c := range []struct {
		in, svc, port string
		ok            bool
	}{
		{"api", "api", "", true},
		{"api:8080", "api", "8080", true},
		{"api:http", "api", "http", true},
		{"", "", "", false},
		{"Api", "", "", false},
		{"api:80:90", "", "", false},
		{"-api", "", "", false},
	} {
		s, err := ParseIntercept(c.in)
		if (err == nil) != c.ok || c.ok && (s.Service != c.svc || s.Port != c.port) {
			t.Errorf("ParseIntercept(%q) = %+v, %v", c.in, s, err)
		}
	}
	if n := shadowName(strings.Repeat("a", 63)); len(n) != 63 || n == shadowName(strings.Repeat("a", 62)+"b") {
		t.Errorf("shortName gives %q (%d)", n, len(n))
	}
}

// TestCleanupIntercepts: a Service whose intercepting sessions are all gone is restored and its
// router removed; one that a live session intercepts is left alone.
func TestCleanupIntercepts(t *testing.T) {
	objs := interceptObjects()
	objs = append(objs,
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "live", Namespace: "ns", Annotations: map[string]string{
			AnnotationInterceptSelector: `{"app":"live"}`, AnnotationInterceptRouter: "tp-router-live"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{LabelRouter: "live"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tp-s1", Namespace: "ns",
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelSession: "s1"},
			Annotations: map[string]string{AnnotationIntercept: "live:8080,x-dev=a"}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tp-s2", Namespace: "ns",
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelSession: "s2"},
			Annotations: map[string]string{AnnotationIntercept: "api,x-dev=b"}},
			Status: corev1.PodStatus{Phase: corev1.PodSucceeded}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: routerName("api"), Namespace: "ns"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: routerName("api"), Namespace: "ns"}},
	)
	cs := fake.NewClientset(objs...)
	ctx := context.Background()
	p, err := planIntercept(ctx, cs, "ns", InterceptSpec{Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pointAtRouter(ctx, cs, p); err != nil {
		t.Fatal(err)
	}
	lines, err := CleanupIntercepts(ctx, cs, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"service/api in ns: its own selector restored and its router removed (no live intercept)",
		"service/live in ns: intercepted by live session(s) s1; left alone",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	api, _ := cs.CoreV1().Services("ns").Get(ctx, "api", metav1.GetOptions{})
	if api.Spec.Selector["app"] != "api" || api.Annotations[AnnotationInterceptSelector] != "" {
		t.Errorf("api not restored: %v %v", api.Spec.Selector, api.Annotations)
	}
	if _, err := cs.CoreV1().ServiceAccounts("ns").Get(ctx, routerName("api"), metav1.GetOptions{}); err == nil {
		t.Error("the router's ServiceAccount is still there")
	}
	live, _ := cs.CoreV1().Services("ns").Get(ctx, "live", metav1.GetOptions{})
	if live.Spec.Selector[LabelRouter] != "live" {
		t.Errorf("live was changed: %v", live.Spec.Selector)
	}
}

// TestSelectorEditedDuringIntercept: a selector someone set while the Service was intercepted is
// replaced by the router's when a session points it again, and left as it is by the restore,
// which then only removes the record.
func TestSelectorEditedDuringIntercept(t *testing.T) {
	cs := fake.NewClientset(interceptObjects()...)
	ctx := context.Background()
	p, err := planIntercept(ctx, cs, "ns", InterceptSpec{Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	edit := func(sel map[string]string) {
		svc, _ := cs.CoreV1().Services("ns").Get(ctx, "api", metav1.GetOptions{})
		svc.Spec.Selector = sel
		if _, err := cs.CoreV1().Services("ns").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pointAtRouter(ctx, cs, p); err != nil {
		t.Fatal(err)
	}
	edit(map[string]string{"app": "api-v2", LabelRouter: "api"})
	if err := pointAtRouter(ctx, cs, p); err != nil {
		t.Fatal(err)
	}
	svc, _ := cs.CoreV1().Services("ns").Get(ctx, "api", metav1.GetOptions{})
	if len(svc.Spec.Selector) != 1 || svc.Spec.Selector[LabelRouter] != "api" || svc.Annotations[AnnotationInterceptSelector] != `{"app":"api"}` {
		t.Fatalf("after pointing again: selector %v, annotations %v", svc.Spec.Selector, svc.Annotations)
	}
	edit(map[string]string{"app": "api-v2"})
	if _, err := restoreService(ctx, cs, "ns", "api"); err != nil {
		t.Fatal(err)
	}
	svc, _ = cs.CoreV1().Services("ns").Get(ctx, "api", metav1.GetOptions{})
	if len(svc.Spec.Selector) != 1 || svc.Spec.Selector["app"] != "api-v2" || svc.Annotations[AnnotationInterceptSelector] != "" {
		t.Errorf("after the restore: selector %v, annotations %v; want the edited selector kept and no record", svc.Spec.Selector, svc.Annotations)
	}
}

// TestClearRouterLeftovers: a new router's creator deletes what a retired router left under the
// same names (owned by the retired router's ServiceAccount, not yet collected) and keeps what the
// new ServiceAccount owns.
func TestClearRouterLeftovers(t *testing.T) {
	owned := func(uid types.UID, name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "ns", OwnerReferences: []metav1.OwnerReference{{Kind: "ServiceAccount", Name: routerName("api"), UID: uid}}}
	}
	tests := []struct {
		name     string
		objs     []runtime.Object
		wantGone []string
		wantKept []string
	}{
		{"a retired router's objects go", []runtime.Object{
			&corev1.Pod{ObjectMeta: owned("old", routerName("api"))},
			&rbacv1.Role{ObjectMeta: owned("old", routerName("api"))},
			&rbacv1.RoleBinding{ObjectMeta: owned("old", routerName("api"))},
			&corev1.Service{ObjectMeta: owned("old", shadowName("api"))},
		}, []string{"pod", "role", "rolebinding", "service"}, nil},
		{"the new router's objects stay", []runtime.Object{
			&corev1.Pod{ObjectMeta: owned("new", routerName("api"))},
			&rbacv1.Role{ObjectMeta: owned("old", routerName("api"))},
			&corev1.Service{ObjectMeta: owned("new", shadowName("api"))},
		}, []string{"role"}, []string{"pod", "service"}},
		{"nothing left: nothing to do", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := append(interceptObjects(), tt.objs...)
			cs := fake.NewClientset(objs...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := planIntercept(ctx, cs, "ns", InterceptSpec{Service: "api"})
			if err != nil {
				t.Fatal(err)
			}
			if err := clearRouterLeftovers(ctx, cs, p, "new"); err != nil {
				t.Fatal(err)
			}
			exists := map[string]bool{}
			_, err = cs.CoreV1().Pods("ns").Get(ctx, routerName("api"), metav1.GetOptions{})
			exists["pod"] = err == nil
			_, err = cs.RbacV1().Roles("ns").Get(ctx, routerName("api"), metav1.GetOptions{})
			exists["role"] = err == nil
			_, err = cs.RbacV1().RoleBindings("ns").Get(ctx, routerName("api"), metav1.GetOptions{})
			exists["rolebinding"] = err == nil
			_, err = cs.CoreV1().Services("ns").Get(ctx, shadowName("api"), metav1.GetOptions{})
			exists["service"] = err == nil
			for _, k := range tt.wantGone {
				if exists[k] {
					t.Errorf("the retired router's %s is still there", k)
				}
			}
			for _, k := range tt.wantKept {
				if !exists[k] {
					t.Errorf("the new router's %s was deleted", k)
				}
			}
		})
	}
}
