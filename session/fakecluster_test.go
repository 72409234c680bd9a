package session

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/portforward"

	"github.com/kubectl-tp/kubectl-tp/podshim"
)

// fakeCluster is a cluster without a cluster, for starting whole sessions in unit tests: a fake
// clientset that allows every access review and "runs" every pod created in it at once, and an
// API server (httptest) that serves only the pods/portforward subresource, over SPDY as the
// kubelet does, to a real podshim.Server started for that pod. Each podshim gets the token and the
// environment of the pod's podshim container, so a session that puts no token in its pod is served
// by a podshim that checks none, as in a cluster.
type fakeCluster struct {
	t  *testing.T
	cs *fake.Clientset
	// cfg is the REST config of the fake API server.
	cfg *rest.Config

	mu sync.Mutex
	// shims maps a pod name to the address of the podshim serving it.
	shims map[string]string
	// created are the pods as the session created them (the session deletes them on Close).
	created []*corev1.Pod
	// forwardedPorts are the pod ports port-forward streams asked for.
	forwardedPorts []string
	conns          []httpstream.Connection
}

// newFakeCluster returns a fakeCluster holding objects; everything it started stops at the end of
// the test.
func newFakeCluster(t *testing.T, objects ...runtime.Object) *fakeCluster {
	t.Helper()
	f := &fakeCluster{t: t, cs: fake.NewClientset(objects...), shims: map[string]string{}}
	f.cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
		r.Status.Allowed = true
		return true, r, nil
	})
	// The object is changed in place and passed on (handled=false) to the tracker, which stores it.
	f.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		f.mu.Lock()
		f.created = append(f.created, pod.DeepCopy())
		f.mu.Unlock()
		f.runPod(pod)
		return false, nil, nil
	})
	srv := httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	f.cfg = &rest.Config{Host: srv.URL}
	t.Cleanup(func() {
		f.mu.Lock()
		conns := f.conns
		f.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
		srv.Close()
	})
	return f
}

// runPod starts a podshim for pod, configured from its podshim container, and marks the pod
// running.
func (f *fakeCluster) runPod(pod *corev1.Pod) {
	var env []string
	token := ""
	for _, c := range pod.Spec.Containers {
		if c.Name != ContainerName {
			continue
		}
		for _, e := range c.Env {
			env = append(env, e.Name+"="+e.Value)
			if e.Name == podshim.TokenVar {
				token = e.Value // the last one wins, as in the kubelet
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatalf("fake kubelet: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &podshim.Server{Token: token, IdleTimeout: time.Minute, Environ: func() []string { return env }}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	f.t.Cleanup(func() { cancel(); <-done })
	f.mu.Lock()
	f.shims[pod.Name] = ln.Addr().String()
	f.mu.Unlock()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning,
		PodIP: "10.0.0.7",
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: ContainerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		}},
	}
}

// createdPods returns the pods the session created so far.
func (f *fakeCluster) createdPods() []*corev1.Pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*corev1.Pod(nil), f.created...)
}

// serveHTTP serves POST /api/v1/namespaces/NS/pods/NAME/portforward over SPDY only: a websocket
// upgrade gets 400, after which client-go falls back to SPDY (as with an older API server).
func (f *fakeCluster) serveHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 7 || parts[0] != "api" || parts[4] != "pods" || parts[6] != "portforward" {
		http.Error(w, "this fake API server only serves pods/portforward", http.StatusNotFound)
		return
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "websocket port-forward is not served by this fake", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	addr := f.shims[parts[5]]
	f.mu.Unlock()
	if addr == "" {
		http.Error(w, "pod "+parts[5]+" not found", http.StatusNotFound)
		return
	}
	if _, err := httpstream.Handshake(r, w, []string{portforward.PortForwardProtocolV1Name}); err != nil {
		return
	}
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, replySent <-chan struct{}) error {
		go f.serveStream(s, replySent, addr)
		return nil
	})
	if conn != nil {
		f.mu.Lock()
		f.conns = append(f.conns, conn)
		f.mu.Unlock()
	}
}

// serveStream connects a data stream to podshim; an error stream is closed without a message
// (no error), which is what the client sees from the kubelet when the connection succeeds.
func (f *fakeCluster) serveStream(s httpstream.Stream, replySent <-chan struct{}, addr string) {
	<-replySent
	if s.Headers().Get(corev1.StreamType) != corev1.StreamTypeData {
		_ = s.Close()
		return
	}
	f.mu.Lock()
	f.forwardedPorts = append(f.forwardedPorts, s.Headers().Get(corev1.PortHeader))
	f.mu.Unlock()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		_ = s.Reset()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := io.Copy(c, s); err != nil {
			_ = c.Close() // reset by the client
			return
		}
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(s, c)
	_ = s.Close()
	<-done
	_ = c.Close()
}

// startSession starts a session against f with opts (Config, Client, Namespace, Image and Stderr
// filled in when unset) and closes it at the end of the test.
func (f *fakeCluster) startSession(t *testing.T, opts Options) *Session {
	t.Helper()
	if opts.Config == nil {
		opts.Config = f.cfg
	}
	if opts.Client == nil {
		opts.Client = ctxClientset{f.cs}
	}
	if opts.Namespace == "" {
		opts.Namespace = "ns"
	}
	if opts.Image == "" {
		opts.Image = "podshim:test"
	}
	var stderr lockedBuffer
	if opts.Stderr == nil {
		opts.Stderr = &stderr
	}
	opts.Quiet = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, opts)
	if s != nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	if err != nil {
		t.Fatalf("Start against the fake cluster: %v (stderr: %s)", err, stderr.String())
	}
	return s
}

// ctxClientset is the fake clientset with pod watches that end when their context does, as the
// API server's do: the fake's never end by themselves, and the session's pod watch would hold
// Close for its 5 s grace.
type ctxClientset struct{ *fake.Clientset }

func (c ctxClientset) CoreV1() typedcorev1.CoreV1Interface { return ctxCore{c.Clientset.CoreV1()} }

type ctxCore struct{ typedcorev1.CoreV1Interface }

func (c ctxCore) Pods(ns string) typedcorev1.PodInterface { return ctxPods{c.CoreV1Interface.Pods(ns)} }

type ctxPods struct{ typedcorev1.PodInterface }

func (p ctxPods) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := p.PodInterface.Watch(ctx, opts)
	if err == nil {
		go func() { <-ctx.Done(); w.Stop() }()
	}
	return w, err
}

// lockedBuffer is a bytes.Buffer safe for the session's concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFakeClusterCarriesTunnel checks the harness itself: a session started against fakeCluster
// reaches its podshim through the fake port-forward, so a failure of the invariant tests built on
// it is about the product, not about the harness.
func TestFakeClusterCarriesTunnel(t *testing.T) {
	f := newFakeCluster(t)
	s := f.startSession(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := s.client.Hello(ctx)
	if err != nil {
		t.Fatalf("hello through the fake port-forward: %v", err)
	}
	if h.Version == "" {
		t.Error("hello: empty version")
	}
	if pods := f.createdPods(); len(pods) != 1 || pods[0].Name != s.PodName {
		t.Fatalf("created pods = %d, want exactly the session's pod %s", len(pods), s.PodName)
	}
	f.mu.Lock()
	ports := f.forwardedPorts
	f.mu.Unlock()
	for _, p := range ports {
		if p != "4747" {
			t.Errorf("port-forward asked for pod port %s, want %d", p, TunnelPort)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := f.cs.CoreV1().Pods("ns").Get(context.Background(), s.PodName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod %s after Close: err = %v, want NotFound", s.PodName, err)
	}
}
