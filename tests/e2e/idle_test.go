package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	spdystream "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/transport/spdy"
)

// idleWindow is how long TestIdleSessionSurvives leaves its session idle: several times the test
// cluster's stream idle timeout (30 s, tests/cluster/cluster.sh), which the control connection
// proves is in force.
const idleWindow = 75 * time.Second

// pinglessStream opens a port-forward stream to port of pod ns/name over SPDY without the pings
// that client-go (and so kubectl and kubectl-tp) sends every few seconds: the kind of connection
// the kubelet's and containerd's stream idle timeout cuts. The control of TestIdleSessionSurvives.
func pinglessStream(t *testing.T, ns, pod string, port int) io.ReadWriteCloser {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := spdystream.NewRoundTripperWithConfig(spdystream.RoundTripperConfig{TLS: tlsCfg, PingPeriod: 0})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s/portforward", cfg.Host, ns, pod))
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := rest.HTTPWrappersForConfig(cfg, rt)
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(rt, &http.Client{Transport: wrapped}, http.MethodPost, u)
	conn, _, err := dialer.Dial("portforward.k8s.io")
	if err != nil {
		t.Fatalf("ping-less port-forward to %s/%s: %v", ns, pod, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	_ = errStream.Close() // no data goes that way
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	return streamCloser{data, conn}
}

// streamCloser closes the port-forward connection with its data stream.
type streamCloser struct {
	httpstream.Stream
	conn httpstream.Connection
}

func (s streamCloser) Close() error { _ = s.Stream.Reset(); return s.conn.Close() }

// TestIdleSessionSurvives leaves a session idle for several times the cluster's stream idle
// timeout (a hardened kubelet/containerd cuts idle port-forward streams after 30 s here) and then
// uses it without a reconnect: a long-lived TCP connection of the child opened before the idle
// window still echoes, a new connection of the child works at once, and so does an in-cluster
// connection to an --expose'd port. A ping-less port-forward opened at the same time is cut, which
// proves the cluster is hardened (the test fails if it is not).
func TestIdleSessionSurvives(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	client := clientPod(t, ns, "web-client")

	// The laptop-side server behind --expose.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "laptop") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	const exposed = 18099
	localPort := ln.Addr().(*net.TCPAddr).Port

	// The child (transparent mode, python's raw sockets): one connection held open across the idle
	// window; after the test's second line on stdin, it uses that connection and a new one.
	script := userScript(t, "idle-child.py", `
import socket, sys, time
def line(c):
    b = b""
    while not b.endswith(b"\n"):
        d = c.recv(100)
        if not d:
            return "EOF after %r" % b
        b += d
    return b.decode().strip()
def report(key, f):
    t = time.monotonic()
    try:
        v = f()
    except Exception as e:
        v = "ERR %s" % e
    print("RESULT %s %s %.0fms" % (key, v, (time.monotonic() - t) * 1000), flush=True)
held = socket.create_connection(("web", 9000), timeout=20)
held.settimeout(20)
report("held before", lambda: (held.sendall(b"before\n"), line(held))[1])
sys.stdin.readline()
report("held after", lambda: (held.sendall(b"after\n"), line(held))[1])
def fresh():
    c = socket.create_connection(("web", 9000), timeout=20)
    c.settimeout(20)
    c.sendall(b"fresh\n")
    return line(c)
report("new conn", fresh)
`)
	// --direct=false: the idle cut is the kubelet's and containerd's, on the port-forward path.
	s := startTrSession(t, ns, []string{"--direct=false", "--expose", fmt.Sprintf("%d:%d", localPort, exposed)}, "exec python3 "+script)
	if !strings.HasPrefix(s.Mode, "transparent mode") {
		t.Fatalf("the session is not in transparent mode: %q", s.Mode)
	}
	s.release(t)
	if v := resultValue(s.waitResult(t, "held before")); v != "before" {
		t.Fatalf("the held connection before the idle window: %q", v)
	}
	exposeURL := fmt.Sprintf("http://%s:%d/", s.PodIP, exposed)
	if got := inCluster(t, client, exposeURL); got != "laptop" {
		t.Fatalf("--expose before the idle window: %q", got)
	}

	// The control: a port-forward without pings to the same echo port, opened now.
	webPod := strings.TrimSpace(kubectl(t, "get", "pods", "-n", ns, "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"))
	control := pinglessStream(t, ns, webPod, 9000)
	if _, err := io.WriteString(control, "control\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(control)
	if l, err := r.ReadString('\n'); err != nil || l != "control\n" {
		t.Fatalf("the control connection does not echo: %q, %v", l, err)
	}
	idleStart := time.Now()
	cut := make(chan time.Duration, 1)
	go func() { _, _ = r.ReadString('\n'); cut <- time.Since(idleStart) }()
	var cutAfter time.Duration
	select {
	case cutAfter = <-cut:
	case <-time.After(idleWindow):
		t.Fatalf("a ping-less port-forward idle for %s was not cut: the test cluster is not hardened (streamingConnectionIdleTimeout / stream_idle_timeout), so this test proves nothing", idleWindow)
	}
	// The idle window itself: nothing to wait for, the session must stay idle this long.
	time.Sleep(time.Until(idleStart.Add(idleWindow)))

	start := time.Now()
	got := inCluster(t, client, exposeURL)
	exposeTook := time.Since(start)
	if got != "laptop" {
		t.Errorf("--expose after %s idle: %q", idleWindow, got)
	}
	if _, err := io.WriteString(s.stdin, "again\n"); err != nil {
		t.Fatal(err)
	}
	held := s.waitResult(t, "held after")
	fresh := s.waitResult(t, "new conn")
	if v := resultValue(held); v != "after" {
		t.Errorf("the connection held across the idle window: %q", held)
	}
	if v := resultValue(fresh); v != "fresh" {
		t.Errorf("a new connection after the idle window: %q", fresh)
	}
	res := s.wait(t)
	if res.Code != 0 {
		t.Errorf("session: %s", res)
	}
	for _, bad := range []string{"tunnel lost", "proxy pod lost", "reconnect"} {
		if strings.Contains(res.Stderr, bad) {
			t.Errorf("the session had to recover (%q) during the idle window:\n%s", bad, res.Stderr)
		}
	}
	t.Logf("control (no pings) cut after %.1fs idle; after %s idle: --expose answered in %dms, held connection %s, new connection %s",
		cutAfter.Seconds(), idleWindow, exposeTook.Milliseconds(), resultTiming(held), resultTiming(fresh))
}

// resultValue and resultTiming split a "VALUE 12ms" result of the idle child.
func resultValue(v string) string {
	if i := strings.LastIndexByte(v, ' '); i >= 0 {
		return v[:i]
	}
	return v
}

func resultTiming(v string) string { return v[strings.LastIndexByte(v, ' ')+1:] }
