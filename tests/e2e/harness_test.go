// Package e2e holds kubectl-tp's end-to-end tests. They run against the real cluster named by
// E2E_KUBECONFIG (started by `make e2e` / tests/cluster), and run the plugin as an unprivileged
// user to prove it needs no root. Helpers here are shared by every e2e test file.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const (
	testappImage = "kubectl-tp.local/testapp:e2e"
	// unprivUser is the account the plugin runs as in the tests.
	unprivUser = "tp-e2e"
)

var (
	adminKubeconfig string // root's admin kubeconfig
	repoRoot        string
	workDir         string // owned by the unprivileged user: plugin binary, kubeconfig, helpers
	pluginBin       string
	clientBin       string // tests/e2e/tpclient built for the child processes
	userKubeconfig  string
	cred            *syscall.Credential
	// fakeDNS is the laptop's nameserver as sessions see it: every plugin run reads resolvConf
	// (KUBECTL_TP_RESOLV_CONF), which names it, so no test query leaves the machine.
	fakeDNS    *fakeNameserver
	resolvConf string
	// fakeNameserverIP is where fakeDNS listens (port 53, UDP and TCP): the first free address
	// from 127.53.0.1, as another e2e run on the machine may hold one.
	fakeNameserverIP string
	// fakeDNSErr says why fakeDNS could not start (port 53 needs root); tests that need it fail.
	fakeDNSErr error
)

const (
	// laptopOnlyName is the one name fakeDNS knows, with the address laptopOnlyAddr.
	laptopOnlyName = "laptop-only.test."
	laptopOnlyAddr = "127.0.0.77"
	// laptopSearch is the search domain of resolvConf.
	laptopSearch = "corp.example"
)

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e setup: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(workDir)
	os.Exit(code)
}

func setup() error {
	adminKubeconfig = os.Getenv("E2E_KUBECONFIG")
	if adminKubeconfig == "" {
		return fmt.Errorf("E2E_KUBECONFIG is not set; run the e2e tests with `make e2e` (it starts the local cluster)")
	}
	wd, _ := os.Getwd()
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	pluginSrc := filepath.Join(repoRoot, "bin", "kubectl-tp")
	if _, err := os.Stat(pluginSrc); err != nil {
		return fmt.Errorf("%s is missing; run `make build` first", pluginSrc)
	}
	var err error
	workDir, err = os.MkdirTemp("", "tp-e2e-")
	if err != nil {
		return err
	}
	if err := os.Chmod(workDir, 0o755); err != nil {
		return err
	}
	pluginBin = filepath.Join(workDir, "kubectl-tp")
	if err := copyFile(pluginSrc, pluginBin, 0o755); err != nil {
		return err
	}
	// Helpers run as the child of `kubectl tp run`: a scriptable client and the test app itself
	// (the "local version" of a swapped service).
	clientBin = filepath.Join(workDir, "tpclient")
	build := exec.Command("go", "build", "-o", workDir+"/", "./tests/e2e/tpclient", "./tests/testapp", "./tests/e2e/incluster")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the e2e helpers: %v\n%s", err, out)
	}
	userKubeconfig = filepath.Join(workDir, "kubeconfig")
	if err := copyFile(adminKubeconfig, userKubeconfig, 0o600); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		cred, err = unprivileged()
		if err != nil {
			return err
		}
		for _, p := range []string{workDir, userKubeconfig, pluginBin, clientBin, filepath.Join(workDir, "testapp"), filepath.Join(workDir, "incluster")} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
	}
	fakeDNS, fakeNameserverIP, fakeDNSErr = startFakeNameserver()
	if fakeDNSErr == nil {
		resolvConf = filepath.Join(workDir, "resolv.conf")
		if err := os.WriteFile(resolvConf, []byte("nameserver "+fakeNameserverIP+"\nsearch "+laptopSearch+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// fakeNameserver is a DNS server standing for the laptop's own nameservers: it answers
// laptopOnlyName with an A record of laptopOnlyAddr (and no AAAA), NXDOMAIN for every other name,
// and remembers the names it was asked.
type fakeNameserver struct {
	mu    sync.Mutex
	asked map[string]int // lower-case fully qualified name → queries
}

// startFakeNameserver serves on port 53 of the first free address from 127.53.0.1, UDP and TCP,
// until the test binary exits, and returns that address.
func startFakeNameserver() (*fakeNameserver, string, error) {
	f := &fakeNameserver{asked: map[string]int{}}
	var last error
	for i := 1; i <= 32; i++ {
		ip := fmt.Sprintf("127.53.0.%d", i)
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "53"))
		if err != nil {
			last = err
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "53"))
		if err != nil {
			pc.Close()
			last = err
			continue
		}
		h := dns.HandlerFunc(f.serve)
		go func() { _ = (&dns.Server{PacketConn: pc, Handler: h}).ActivateAndServe() }()
		go func() { _ = (&dns.Server{Listener: l, Handler: h}).ActivateAndServe() }()
		return f, ip, nil
	}
	return nil, "", fmt.Errorf("the fake laptop nameserver (port 53 needs root): %w", last)
}

func (f *fakeNameserver) serve(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	f.mu.Lock()
	f.asked[name]++
	f.mu.Unlock()
	switch {
	case name == laptopOnlyName && q.Qtype == dns.TypeA:
		resp.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.ParseIP(laptopOnlyAddr).To4(),
		}}
	case name == laptopOnlyName: // the name exists, without records of this type
	default:
		resp.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(resp)
}

// queries returns how often name (fully qualified, any case) was asked so far.
func (f *fakeNameserver) queries(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[strings.ToLower(dns.Fqdn(name))]
}

// needFakeNameserver fails the test when the fake laptop nameserver is not running.
func needFakeNameserver(t *testing.T) {
	t.Helper()
	if fakeDNSErr != nil {
		t.Fatalf("this test needs the fake laptop nameserver on port 53 of 127.53.0.x: %v", fakeDNSErr)
	}
}

// unprivileged returns the credentials of the test user, creating the account when needed.
func unprivileged() (*syscall.Credential, error) {
	u, err := user.Lookup(unprivUser)
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", unprivUser).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("useradd %s: %v: %s", unprivUser, err, out)
		}
		if u, err = user.Lookup(unprivUser); err != nil {
			return nil, err
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		return nil, fmt.Errorf("user %s has uid 0", unprivUser)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// result is what a finished command printed and how it exited.
type result struct {
	Stdout, Stderr string
	Code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// tpCmd prepares `kubectl tp ARGS` as the unprivileged user, with the user's kubeconfig.
func tpCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, pluginBin, args...)
	cmd.Dir = workDir
	cmd.Env = []string{
		"PATH=" + workDir + ":/usr/local/bin:/usr/bin:/bin",
		"HOME=" + workDir,
		"KUBECONFIG=" + userKubeconfig,
		"KUBECTL_TP_IMAGE=" + os.Getenv("KUBECTL_TP_IMAGE"),
	}
	if resolvConf != "" {
		// The session's DNS forwards non-cluster names to the fake laptop nameserver only.
		cmd.Env = append(cmd.Env, "KUBECTL_TP_RESOLV_CONF="+resolvConf)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// tp runs `kubectl tp ARGS` to completion (3 minutes at most).
func tp(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return run(tpCmd(ctx, args...))
}

func run(cmd *exec.Cmd) result {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			errb.WriteString("\n[harness] " + err.Error())
		}
	}
	return result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// kubectl runs kubectl as the admin; it fails the test on error.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectlErr(args ...string) (string, error) {
	return kubectlIn("", args...)
}

func kubectlIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", adminKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// apply applies a manifest as the admin.
func apply(t *testing.T, ns, manifest string) {
	t.Helper()
	if out, err := kubectlIn(manifest, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n---\n%s", err, out, manifest)
	}
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// namespace creates a fresh namespace for the test (with extra labels) and deletes it afterwards.
func namespace(t *testing.T, labels ...string) string {
	t.Helper()
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[:40]
	}
	name = strings.Trim(name, "-") + "-" + randomSuffix()
	kubectl(t, "create", "namespace", name)
	if len(labels) > 0 {
		kubectl(t, append([]string{"label", "namespace", name}, labels...)...)
	}
	// The namespace's default ServiceAccount must exist before pods are admitted.
	waitFor(t, 30*time.Second, "default ServiceAccount in "+name, func() error {
		_, err := kubectlErr("get", "serviceaccount", "default", "-n", name)
		return err
	})
	t.Cleanup(func() { _, _ = kubectlErr("delete", "namespace", name, "--wait=false") })
	return name
}

func waitFor(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// webApp deploys the test app as Deployment+Service `name` answering /color with color.
func webApp(t *testing.T, ns, name, color string) {
	t.Helper()
	apply(t, ns, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: app
        image: %[3]s
        imagePullPolicy: IfNotPresent
        args: ["-http=:8080", "-https=:8443", "-echo=:9000", "-health=:8081", "-tls-names=%[1]s,%[1]s.%[4]s.svc,%[1]s.%[4]s.svc.cluster.local"]
        env: [{name: COLOR, value: %[2]s}]
        ports:
        - {name: http, containerPort: 8080}
        - {name: https, containerPort: 8443}
        - {name: echo, containerPort: 9000}
        readinessProbe: {httpGet: {path: /healthz, port: 8081}, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: %[1]s}
  ports:
  - {name: http, port: 8080}
  - {name: https, port: 8443}
  - {name: echo, port: 9000}
`, name, color, testappImage, ns))
	kubectl(t, "rollout", "status", "-n", ns, "deployment/"+name, "--timeout=120s")
	serviceRoutable(t, ns, name)
}

// serviceRoutable waits until kube-proxy routes every port of Service ns/name to a ready pod. A
// rollout is complete once the pod is ready, but the EndpointSlice update and kube-proxy's next
// iptables sync (at most once per second) come later: until then the ClusterIP rejects
// connections, in-cluster and from this node alike (the same rules serve both), so a test that
// dials the Service at once can get "connection refused" for reasons outside kubectl-tp.
func serviceRoutable(t *testing.T, ns, name string) {
	t.Helper()
	out := kubectl(t, "get", "service", name, "-n", ns, "-o", `jsonpath={.spec.clusterIP}{range .spec.ports[*]}{" "}{.port}{end}`)
	fields := strings.Fields(out)
	if len(fields) < 2 {
		t.Fatalf("service %s/%s: no ClusterIP or ports in %q", ns, name, out)
	}
	start, refused := time.Now(), 0
	for _, port := range fields[1:] {
		addr := net.JoinHostPort(fields[0], port)
		waitFor(t, 30*time.Second, "kube-proxy to route "+ns+"/"+name+" at "+addr, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				refused++
				return err
			}
			return c.Close()
		})
	}
	if refused > 0 {
		t.Logf("service %s/%s routed %.2fs after its rollout (%d refused dials before)", ns, name, time.Since(start).Seconds(), refused)
	}
}

// portForward runs `kubectl port-forward` to target and returns the local port; it stops with the test.
func portForward(t *testing.T, ns, target string, remotePort int) int {
	t.Helper()
	cmd := exec.Command("kubectl", "--kubeconfig", adminKubeconfig, "port-forward", "-n", ns, target, fmt.Sprintf(":%d", remotePort))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	buf := make([]byte, 4096)
	var seen string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n, err := stdout.Read(buf)
		seen += string(buf[:n])
		if m := re.FindStringSubmatch(seen); m != nil {
			p, _ := strconv.Atoi(m[1])
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return p
		}
		if err != nil {
			break
		}
	}
	t.Fatalf("kubectl port-forward %s did not report a port: %q", target, seen)
	return 0
}

// httpGet fetches a URL directly (no proxy) and returns status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// tpPods lists the proxy pods left in a namespace.
func tpPods(t *testing.T, ns string) []string {
	t.Helper()
	out := kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/managed-by=kubectl-tp", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.phase}{\"\\n\"}{end}")
	return strings.Fields(out)
}

// noPodsLeft waits until no proxy pod is left in ns.
func noPodsLeft(t *testing.T, ns string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "no kubectl-tp pod left in "+ns, func() error {
		if p := tpPods(t, ns); len(p) > 0 {
			return fmt.Errorf("left: %v", p)
		}
		return nil
	})
}

// userFile writes a private file (0600) for the unprivileged user in the work directory and
// removes it when the test ends.
func userFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(workDir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		_ = os.Chown(path, int(cred.Uid), int(cred.Gid))
	}
	t.Cleanup(func() { _ = os.Remove(path) })
	return path
}

// signalRounds is how many rounds a signal test runs: def, or E2E_SIGNAL_ROUNDS, which must be a
// positive number (a loop of 0 rounds would pass without testing anything).
func signalRounds(t *testing.T, def int) int {
	t.Helper()
	s := os.Getenv("E2E_SIGNAL_ROUNDS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("E2E_SIGNAL_ROUNDS=%q: want a positive number of rounds", s)
	}
	return n
}

// signalTree sends sig to pid and to every process descended from it, as a laptop that dies or
// sleeps would stop them all: kubectl-tp runs its child in a process group of its own, so a
// signal to kubectl-tp's group alone would leave the child running (and holding its ports).
func signalTree(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	parents := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The fields after the command name (in parentheses, which may hold spaces): state, ppid.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			parents[ppid] = append(parents[ppid], child)
		}
	}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, parents[tree[i]]...)
	}
	for _, p := range tree {
		_ = syscall.Kill(p, sig)
	}
}
