package session

// Security invariants of a session (issue #13, "tests that must be able to fail"): the laptop-side
// proxies listen on loopback only, ask for per-session random credentials, the proxy pod's podshim
// listens on loopback only and checks a token, and the proxy pod never runs as root whatever the
// workload it is built from. Each test here fails if the product breaks the invariant; sessions
// are started whole against fakeCluster (fakecluster_test.go), no cluster needed.

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
	"github.com/kubectl-tp/kubectl-tp/podshim"
)

// listenerAddr returns the local address of a listener or packet socket among a session's
// closers, or nil for other closers.
func listenerAddr(c io.Closer) net.Addr {
	switch l := c.(type) {
	case net.Listener:
		return l.Addr()
	case net.PacketConn:
		return l.LocalAddr()
	}
	return nil
}

// loopbackProblem says why host:port addr is not a loopback address ("" when it is).
func loopbackProblem(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port: %v", addr, err)
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return fmt.Sprintf("%q has host %q, not an IP address", addr, host)
	case ip.IsUnspecified():
		return fmt.Sprintf("%q is the unspecified address: it listens on every interface", addr)
	case !ip.IsLoopback():
		return fmt.Sprintf("%q is not a loopback address", addr)
	}
	return ""
}

// TestSessionServersListenOnLoopback starts a session the way `kubectl tp run` does and checks
// that every laptop-side server (SOCKS5, the JVM's SOCKS5, the HTTP proxy and DNS over UDP and
// TCP) listens on a loopback address, never on all interfaces: other machines on the network must
// not reach the cluster through the user's laptop.
func TestSessionServersListenOnLoopback(t *testing.T) {
	f := newFakeCluster(t)
	s := f.startSession(t, Options{})
	e := s.Endpoints
	cases := []struct {
		name, addr string
		optional   bool // empty where the platform cannot provide it
	}{
		{"SOCKS5", e.SOCKS, false},
		{"HTTP proxy", e.HTTP, false},
		{"DNS", e.DNS, false},
		{"JVM SOCKS5", e.JavaSOCKS, true},
	}
	for _, tc := range cases {
		t.Run("endpoint "+tc.name, func(t *testing.T) {
			if tc.addr == "" {
				if !tc.optional {
					t.Fatalf("%s endpoint is empty", tc.name)
				}
				t.Skipf("%s not served on this platform", tc.name)
			}
			if p := loopbackProblem(tc.addr); p != "" {
				t.Errorf("%s endpoint: %s", tc.name, p)
			}
		})
	}
	// The endpoints are what the child is told; the sockets themselves are what others can reach.
	t.Run("every socket", func(t *testing.T) {
		n := 0
		for _, c := range s.closers {
			a := listenerAddr(c)
			if a == nil {
				continue
			}
			n++
			if p := loopbackProblem(a.String()); p != "" {
				t.Errorf("%s socket: %s", a.Network(), p)
			}
		}
		// SOCKS5, HTTP proxy, DNS over UDP and over TCP; the JVM's SOCKS5 where supported.
		if n < 4 {
			t.Errorf("found %d listening sockets, want at least 4 (SOCKS5, HTTP, DNS UDP+TCP)", n)
		}
	})
}

// TestSessionProxyCredentials starts two sessions and checks the proxy credentials each
// generates: present (a server without them lets any local process through the proxy), long
// enough to resist guessing, and different from session to session.
func TestSessionProxyCredentials(t *testing.T) {
	f := newFakeCluster(t)
	a := f.startSession(t, Options{}).Endpoints
	b := f.startSession(t, Options{}).Endpoints
	cases := []struct {
		name   string
		a, b   string
		minLen int
	}{
		{"username", a.Username, b.Username, 8},
		{"password", a.Password, b.Password, 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.a == "" || tc.b == "" {
				t.Fatalf("%s is empty (sessions: %q, %q)", tc.name, tc.a, tc.b)
			}
			if len(tc.a) < tc.minLen || len(tc.b) < tc.minLen {
				t.Errorf("%s %q / %q shorter than %d characters", tc.name, tc.a, tc.b, tc.minLen)
			}
			if tc.a == tc.b {
				t.Errorf("two sessions generated the same %s %q: not random", tc.name, tc.a)
			}
		})
	}
	if a.Username == a.Password {
		t.Errorf("username and password are the same (%q)", a.Username)
	}
}

// echoServer accepts connections on loopback and echoes what it reads; it stands for a service in
// the cluster (the fake cluster's podshim dials it directly).
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln)
	return ln.Addr().String()
}

// socksRequest runs a SOCKS5 CONNECT to target through the proxy at proxyAddr, offering
// user/password authentication when user is non-empty and "no authentication" otherwise. It
// returns the connection (nil unless the server granted it) and what happened.
func socksRequest(t *testing.T, proxyAddr, user, pass, target string) (net.Conn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fail := func(what string) (net.Conn, string) { c.Close(); return nil, what }
	method := byte(0x00)
	if user != "" {
		method = 0x02
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return fail("write greeting: " + err.Error())
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return fail("no method selection: " + err.Error())
	}
	if sel[1] != method {
		return fail(fmt.Sprintf("method %#x refused (server chose %#x)", method, sel[1]))
	}
	if method == 0x02 {
		msg := append([]byte{1, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := c.Write(msg); err != nil {
			return fail("write credentials: " + err.Error())
		}
		var st [2]byte
		if _, err := io.ReadFull(c, st[:]); err != nil {
			return fail("no authentication status: " + err.Error())
		}
		if st[1] != 0 {
			return fail(fmt.Sprintf("authentication failed (status %#x)", st[1]))
		}
	}
	host, portStr, _ := net.SplitHostPort(target)
	var port int
	fmt.Sscan(portStr, &port)
	ip := net.ParseIP(host).To4()
	req := append([]byte{5, 1, 0, 1}, ip...)
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		return fail("write request: " + err.Error())
	}
	rep := make([]byte, 10)
	if _, err := io.ReadFull(c, rep); err != nil {
		return fail("no reply: " + err.Error())
	}
	if rep[1] != 0 {
		return fail(fmt.Sprintf("CONNECT refused (reply %#x)", rep[1]))
	}
	_ = c.SetDeadline(time.Time{})
	return c, "granted"
}

// TestSessionProxiesRequireCredentials starts a session and connects to its SOCKS5 and HTTP
// proxies without credentials, with a wrong user name or password, and with the session's own:
// only the last may reach the cluster. (The JVM's SOCKS5 server asks for none by design; it is
// narrowed to the user's own processes instead, see proxy.SameUser.)
func TestSessionProxiesRequireCredentials(t *testing.T) {
	f := newFakeCluster(t)
	s := f.startSession(t, Options{})
	e := s.Endpoints
	target := echoServer(t)
	cases := []struct {
		name       string
		user, pass string
		useAuth    bool
		granted    bool
	}{
		{"no credentials", "", "", false, false},
		{"wrong password", e.Username, e.Password + "x", true, false},
		{"wrong username", e.Username + "x", e.Password, true, false},
		{"empty password", e.Username, "", true, false},
		{"session credentials", e.Username, e.Password, true, true},
	}
	for _, tc := range cases {
		t.Run("SOCKS5 "+tc.name, func(t *testing.T) {
			user := tc.user
			if !tc.useAuth {
				user = ""
			} else if user == "" {
				user = "-" // RFC 1929 needs a user name to send anything at all
			}
			c, what := socksRequest(t, e.SOCKS, user, tc.pass, target)
			if (c != nil) != tc.granted {
				t.Fatalf("SOCKS5 with %s: %s; want granted=%v", tc.name, what, tc.granted)
			}
			if c == nil {
				return
			}
			defer c.Close()
			if _, err := io.WriteString(c, "ping"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo through SOCKS5: %q, %v", buf, err)
			}
		})
		t.Run("HTTP "+tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", e.HTTP, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
			if tc.useAuth {
				req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(tc.user+":"+tc.pass)) + "\r\n"
			}
			if _, err := io.WriteString(c, req+"\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatalf("reading the CONNECT response: %v", err)
			}
			if granted := resp.StatusCode == http.StatusOK; granted != tc.granted {
				t.Fatalf("HTTP CONNECT with %s: %s; want granted=%v", tc.name, resp.Status, tc.granted)
			}
			if !tc.granted {
				if resp.StatusCode != http.StatusProxyAuthRequired {
					t.Errorf("status %s, want 407 Proxy Authentication Required", resp.Status)
				}
				return
			}
			if _, err := io.WriteString(c, "ping"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo through the HTTP proxy: %q, %v", buf, err)
			}
		})
	}
}

// podshimListen returns the address podshim's args make it listen on, as its flag package reads
// them (-listen=X, --listen=X, -listen X; the last one wins), or "" when no -listen is given.
func podshimListen(args []string) string {
	listen := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "listen" {
			continue
		}
		if !hasValue && i+1 < len(args) {
			i++
			value = args[i]
		}
		listen = value
	}
	return listen
}

// insecureFlag reports whether args turn on podshim's -insecure-no-token.
func insecureFlag(args []string) bool {
	for _, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "insecure-no-token" && (!hasValue || value != "false") {
			return true
		}
	}
	return false
}

// proxyPodProblems lists how pod breaks what every proxy pod must keep: podshim as its only
// container, listening on loopback only (port-forward reaches it there; nothing else may), with a
// session token; and Pod Security "restricted" at both levels: non-root, no privilege escalation,
// no capabilities, RuntimeDefault seccomp, no host namespaces.
func proxyPodProblems(pod *corev1.Pod) []string {
	var p []string
	bad := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	spec := pod.Spec
	if len(spec.Containers) != 1 || spec.Containers[0].Name != ContainerName {
		bad("containers: want exactly the %q container, got %d", ContainerName, len(spec.Containers))
		return p
	}
	if len(spec.InitContainers) > 0 || len(spec.EphemeralContainers) > 0 {
		bad("has init or ephemeral containers")
	}
	c := spec.Containers[0]
	if len(c.Command) > 0 {
		bad("podshim container overrides the image's command: %q", c.Command)
	}
	listen := podshimListen(c.Args)
	if listen == "" {
		bad("podshim args %q set no -listen address", c.Args)
	} else if prob := loopbackProblem(listen); prob != "" {
		bad("podshim -listen: %s", prob)
	} else if !strings.HasSuffix(listen, fmt.Sprintf(":%d", TunnelPort)) {
		bad("podshim -listen=%s, want port %d (the port-forward target)", listen, TunnelPort)
	}
	if insecureFlag(c.Args) {
		bad("podshim args %q include -insecure-no-token", c.Args)
	}
	var token *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == podshim.TokenVar {
			token = &c.Env[i] // the last one wins
		}
	}
	switch {
	case token == nil:
		bad("podshim container has no %s", podshim.TokenVar)
	case token.ValueFrom != nil:
		if ref := token.ValueFrom.SecretKeyRef; ref == nil || ref.Name == "" || ref.Key == "" || (ref.Optional != nil && *ref.Optional) {
			bad("%s is not a value nor a required Secret key: %+v", podshim.TokenVar, token.ValueFrom)
		}
	case len(token.Value) < 16:
		bad("%s = %q: empty or too short to be a secret", podshim.TokenVar, token.Value)
	}

	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		bad("uses host namespaces (network %v, pid %v, ipc %v)", spec.HostNetwork, spec.HostPID, spec.HostIPC)
	}
	psc := spec.SecurityContext
	if psc == nil {
		bad("no pod securityContext")
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		bad("pod runAsNonRoot = %v, want true", fmtPtr(psc.RunAsNonRoot))
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		bad("pod runAsUser = 0 (root)")
	}
	if psc.RunAsGroup != nil && *psc.RunAsGroup == 0 {
		bad("pod runAsGroup = 0 (root group)")
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		bad("pod seccompProfile = %+v, want RuntimeDefault", psc.SeccompProfile)
	}
	csc := c.SecurityContext
	if csc == nil {
		bad("no container securityContext")
		return p
	}
	if csc.RunAsNonRoot != nil && !*csc.RunAsNonRoot {
		bad("container runAsNonRoot = false overrides the pod's")
	}
	if csc.RunAsUser != nil && *csc.RunAsUser == 0 {
		bad("container runAsUser = 0 (root)")
	}
	if csc.RunAsGroup != nil && *csc.RunAsGroup == 0 {
		bad("container runAsGroup = 0 (root group)")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		bad("container allowPrivilegeEscalation = %v, want false", fmtPtr(csc.AllowPrivilegeEscalation))
	}
	if csc.Privileged != nil && *csc.Privileged {
		bad("container is privileged")
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		bad("container capabilities do not drop ALL: %+v", csc.Capabilities)
	} else if len(csc.Capabilities.Add) > 0 {
		bad("container adds capabilities %v", csc.Capabilities.Add)
	}
	if sp := csc.SeccompProfile; sp != nil && sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		bad("container seccompProfile %s overrides the pod's RuntimeDefault", sp.Type)
	}
	if csc.ProcMount != nil && *csc.ProcMount != corev1.DefaultProcMount {
		bad("container procMount %s", *csc.ProcMount)
	}
	return p
}

func fmtPtr[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// effectiveUID is the uid the container runs as: the container's runAsUser, else the pod's (-1
// when neither is set: the image's user, which runAsNonRoot must then check).
func effectiveUID(pod *corev1.Pod) int64 {
	if csc := pod.Spec.Containers[0].SecurityContext; csc != nil && csc.RunAsUser != nil {
		return *csc.RunAsUser
	}
	if psc := pod.Spec.SecurityContext; psc != nil && psc.RunAsUser != nil {
		return *psc.RunAsUser
	}
	return -1
}

// rootTemplate returns the pod template of a workload that runs as root in every way it can:
// uid and gid 0 at pod and container level, runAsNonRoot false, privileged with added
// capabilities, Unconfined seccomp, host namespaces; plus its own podshim-looking args and an
// empty TP_TOKEN in its env, which must not reach the proxy pod's podshim.
func rootTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api"}},
		Spec: corev1.PodSpec{
			HostNetwork: true,
			HostPID:     true,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser:      ptr.To[int64](0),
				RunAsGroup:     ptr.To[int64](0),
				RunAsNonRoot:   ptr.To(false),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "api:1",
				Args:  []string{"-listen=0.0.0.0:4747", "-insecure-no-token"},
				Env:   []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: podshim.TokenVar, Value: ""}},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser:                ptr.To[int64](0),
					RunAsGroup:               ptr.To[int64](0),
					RunAsNonRoot:             ptr.To(false),
					Privileged:               ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(true),
					Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN", "NET_ADMIN"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
					ProcMount:                ptr.To(corev1.UnmaskedProcMount),
				},
			}},
		},
	}
}

// TestProxyPodInvariants builds the proxy pod as the session does (buildPod for a plain run,
// podFromTemplate for --from) from templates that run as root at pod level, at container level,
// at both, or that pass a non-root uid at one level only, and checks every invariant of
// proxyPodProblems plus the uid the proxy runs as: the workload's own non-root uid when it has
// one, podshim's 65532 otherwise, never 0.
func TestProxyPodInvariants(t *testing.T) {
	spec := podSpec{Name: "tp-x", Namespace: "ns", SessionID: "x", Image: "shim", Token: "0123456789abcdef0123456789abcdef", IdleTimeout: 30 * time.Second}
	withPod := func(f func(*corev1.PodSecurityContext)) func(*corev1.PodTemplateSpec) {
		return func(tpl *corev1.PodTemplateSpec) { f(tpl.Spec.SecurityContext) }
	}
	withContainer := func(f func(*corev1.SecurityContext)) func(*corev1.PodTemplateSpec) {
		return func(tpl *corev1.PodTemplateSpec) { f(tpl.Spec.Containers[0].SecurityContext) }
	}
	cases := []struct {
		name string
		// tpl are changes to rootTemplate() before the pod is built from it.
		tpl []func(*corev1.PodTemplateSpec)
		// plain builds the pod of a plain run (no template at all).
		plain   bool
		wantUID int64
	}{
		{name: "plain run", plain: true, wantUID: 65532},
		{name: "root at pod and container level", wantUID: 65532},
		{name: "root at pod level only", tpl: []func(*corev1.PodTemplateSpec){
			withContainer(func(sc *corev1.SecurityContext) { *sc = corev1.SecurityContext{} }),
		}, wantUID: 65532},
		{name: "root at container level only", tpl: []func(*corev1.PodTemplateSpec){
			withPod(func(sc *corev1.PodSecurityContext) { *sc = corev1.PodSecurityContext{} }),
		}, wantUID: 65532},
		{name: "root at pod level, uid 1000 in the container", tpl: []func(*corev1.PodTemplateSpec){
			withContainer(func(sc *corev1.SecurityContext) { sc.RunAsUser = ptr.To[int64](1000) }),
		}, wantUID: 1000},
		{name: "uid 1000 at pod level, root in the container", tpl: []func(*corev1.PodTemplateSpec){
			withPod(func(sc *corev1.PodSecurityContext) { sc.RunAsUser = ptr.To[int64](1000) }),
		}, wantUID: 1000},
		{name: "no security context at all", tpl: []func(*corev1.PodTemplateSpec){
			withPod(func(sc *corev1.PodSecurityContext) { *sc = corev1.PodSecurityContext{} }),
			withContainer(func(sc *corev1.SecurityContext) { *sc = corev1.SecurityContext{} }),
		}, wantUID: 65532},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var pod *corev1.Pod
			if tc.plain {
				pod = buildPod(spec)
			} else {
				tpl := rootTemplate()
				for _, f := range tc.tpl {
					f(&tpl)
				}
				pod = podFromTemplate(spec, &tpl, &tpl.Spec.Containers[0], "deployments/api:app")
			}
			for _, p := range proxyPodProblems(pod) {
				t.Error(p)
			}
			if uid := effectiveUID(pod); uid != tc.wantUID {
				t.Errorf("proxy runs as uid %d, want %d", uid, tc.wantUID)
			}
		})
	}
}

// TestStartedProxyPodInvariants starts whole sessions against the fake cluster, a plain run and
// one --from a Deployment that runs as root at pod and container level, and checks the pod the
// session actually created (its token is generated by the session, not given by the test).
func TestStartedProxyPodInvariants(t *testing.T) {
	root := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns"},
		Spec:       appsv1.DeploymentSpec{Template: rootTemplate()},
	}
	cases := []struct {
		name    string
		objects []runtime.Object
		opts    Options
	}{
		{"plain run", nil, Options{}},
		{"from a root deployment", []runtime.Object{root}, Options{From: &Target{Kind: "deployments", Name: "api"}, Mount: "false", EnvSyntax: "posix"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(t, tc.objects...)
			s := f.startSession(t, tc.opts)
			pods := f.createdPods()
			if len(pods) != 1 || pods[0].Name != s.PodName {
				t.Fatalf("created %d pods, want the session's pod %s", len(pods), s.PodName)
			}
			for _, p := range proxyPodProblems(pods[0]) {
				t.Error(p)
			}
			if uid := effectiveUID(pods[0]); uid == 0 {
				t.Error("the proxy pod runs as root")
			}
		})
	}
}

// TestProxyPodNotSelectedByServices checks what the e2e test TestRunFrom's "must not have been
// selected by the Deployment's Service labels" comment promises: a proxy pod built --from a
// workload carries none of its template's labels, so no Service of that workload sends it
// traffic; only a swap (keepLabels) makes it selectable, on purpose.
func TestProxyPodNotSelectedByServices(t *testing.T) {
	tpl := rootTemplate()
	tpl.Labels = map[string]string{"app": "api", "tier": "backend", "pod-template-hash": "abc"}
	spec := podSpec{Name: "tp-x", Namespace: "ns", SessionID: "x", Image: "shim", Token: "t", IdleTimeout: time.Second}
	selectors := []map[string]string{
		{"app": "api"},
		{"tier": "backend"},
		{"app": "api", "tier": "backend"},
	}
	cases := []struct {
		name     string
		swap     bool
		selected bool
	}{
		{"--from", false, false},
		{"--swap", true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := podFromTemplate(spec, &tpl, &tpl.Spec.Containers[0], "deployments/api:app")
			if tc.swap {
				keepLabels(pod, &tpl)
			}
			for _, sel := range selectors {
				got := labels.SelectorFromSet(sel).Matches(labels.Set(pod.Labels))
				if got != tc.selected {
					t.Errorf("Service selector %v selects the proxy pod (labels %v): %v, want %v", sel, pod.Labels, got, tc.selected)
				}
			}
			if _, ok := pod.Labels["pod-template-hash"]; ok {
				t.Errorf("proxy pod carries pod-template-hash %q: its ReplicaSet could adopt it", pod.Labels["pod-template-hash"])
			}
			if pod.Labels[LabelManagedBy] != ManagedBy || pod.Labels[LabelSession] != "x" {
				t.Errorf("proxy pod lost its own labels: %v", pod.Labels)
			}
		})
	}
}
