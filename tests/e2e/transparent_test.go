package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Transparent mode's tests. On this single-node cluster the node itself reaches ClusterIPs and
// pod IPs (kube-proxy's rules serve the host too), so a request that reaches a Service proves
// nothing by itself: every HTTP check asks the test app's /peer, which answers the address the
// request came from, and wants the proxy pod's IP. The same request made outside the session
// answers an address of this machine instead, which each test checks once so the check can fail.

// trStartupRe matches the start-up line of a session.
var trStartupRe = regexp.MustCompile(`kubectl-tp: session (\S+): pod ([^/\s]+)/(\S+), (.*)`)

// trPython is the Python client: `python3 FILE MODE ARGS...`; each result is one line
// "RESULT MODE TARGET VALUE", VALUE starting with ERR on failure.
//
//	peer4 HOST...        socket.create_connection((HOST, 8080)), blocking; GET /peer by hand
//	thread4 HOST...      peer4 from a second thread (not the thread group's leader)
//	peer6 ADDR...        an AF_INET6 socket connected to (ADDR, 8080); GET /peer by hand
//	blocking HOST PORT   blocking connect: "connected" or the errno's name
//	nonblocking HOST PORT  non-blocking connect, select, SO_ERROR, then a read: errno's name
//	udp HOST PORT        connect a UDP socket: "connected" or the errno's name
//	aaaa HOST            getaddrinfo(HOST, AF_INET6): the addresses or the error, and "in=SECONDS"
//	serve DIR            serve DIR over HTTP on 127.0.0.1 (a free port, printed) until stdin ends
const trPython = `import errno, functools, http.server, select, socket, sys, threading, time

def get_peer(s, host):
    s.settimeout(60)
    s.sendall(("GET /peer HTTP/1.0\r\nHost: %s\r\n\r\n" % host).encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode()
    if " 200 " not in status:
        raise Exception("answer %r" % data)
    return body.decode().strip()

def report(mode, target, value):
    print("RESULT", mode, target, value, flush=True)

def errname(e):
    return errno.errorcode.get(e.errno, repr(e)) if isinstance(e, OSError) and e.errno else repr(e)

def peer4(mode, hosts):
    for h in hosts:
        try:
            with socket.create_connection((h, 8080)) as s:
                v = get_peer(s, h)
        except Exception as e:
            v = "ERR " + repr(e)
        report(mode, h, v)

mode, args = sys.argv[1], sys.argv[2:]
if mode == "peer4":
    peer4(mode, args)
elif mode == "thread4":
    th = threading.Thread(target=peer4, args=(mode, args))
    th.start()
    th.join()
elif mode == "peer6":
    for a in args:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.connect((a, 8080, 0, 0))
                v = get_peer(s, a)
        except Exception as e:
            v = "ERR " + repr(e)
        report(mode, a, v)
elif mode == "blocking":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect((args[0], int(args[1])))
        v = "connected"
    except OSError as e:
        v = errname(e)
    report(mode, args[0] + ":" + args[1], v)
elif mode == "nonblocking":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    rc = s.connect_ex((args[0], int(args[1])))
    if rc == errno.EINPROGRESS:
        _, w, _ = select.select([], [s], [], 60)
        rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if w else errno.ETIMEDOUT
    if rc == 0:
        s.setblocking(True)
        s.settimeout(60)
        try:
            v = "connected, then read %r" % s.recv(1)
        except OSError as e:
            v = errname(e)
    else:
        v = errno.errorcode.get(rc, str(rc))
    report(mode, args[0] + ":" + args[1], v)
elif mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((args[0], int(args[1])))
        v = "connected"
    except OSError as e:
        v = errname(e)
    report(mode, args[0] + ":" + args[1], v)
elif mode == "aaaa":
    start = time.monotonic()
    try:
        v = ",".join(sorted({ai[4][0] for ai in socket.getaddrinfo(args[0], 8080, socket.AF_INET6, socket.SOCK_STREAM)}))
    except socket.gaierror as e:
        v = "gaierror %r" % (e.args,)
    report(mode, args[0], "%s in=%.3f" % (v, time.monotonic() - start))
elif mode == "serve":
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=args[0]))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    report(mode, "port", srv.server_address[1])
    sys.stdin.read()
    srv.shutdown()
else:
    sys.exit("unknown mode " + mode)
`

// trNode is the Node client: `node FILE URL...` fetches each URL with the built-in fetch.
const trNode = `(async () => {
  for (const u of process.argv.slice(2)) {
    let v;
    try {
      const r = await fetch(u, { signal: AbortSignal.timeout(60000) });
      v = r.ok ? (await r.text()).trim() : "ERR status " + r.status;
    } catch (e) {
      v = "ERR " + e + (e.cause ? " cause: " + (e.cause.code || e.cause.message) : "");
    }
    console.log("RESULT node " + new URL(u).hostname + " " + v);
  }
})();
`

// trJava is the Java client: `java FILE URL...` (single-file source launch) fetches each URL with
// java.net.http.HttpClient, with no proxy settings.
const trJava = `import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class Main {
    public static void main(String[] args) {
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(60)).build();
        for (String u : args) {
            URI uri = URI.create(u);
            String v;
            try {
                HttpResponse<String> r = client.send(HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(60)).GET().build(),
                        HttpResponse.BodyHandlers.ofString());
                v = r.statusCode() == 200 ? r.body().trim() : "ERR status " + r.statusCode();
            } catch (Exception e) {
                v = "ERR " + e;
            }
            System.out.println("RESULT java " + uri.getHost() + " " + v);
        }
    }
}
`

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// trSession is a running `kubectl tp run … -- sh -c SCRIPT` whose script starts only when the
// test releases it (a line on its stdin), once the test knows the proxy pod's name and IP: the
// pod is gone when the session ends.
type trSession struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr *syncBuffer
	done           chan struct{}
	res            result

	ID, Pod, PodIP string
	// Mode is the start-up line after the pod's name ("transparent mode: …" or "proxy variables: …").
	Mode string
}

// startTrSession starts the session and waits for its start-up line (so flags must not include
// --quiet). The child's stdin stays open until release or wait.
func startTrSession(t *testing.T, ns string, flags []string, script string) *trSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	args := append(append([]string{"run", "-n", ns}, flags...), "--", "sh", "-c", "read -r _go || exit 99\n"+script)
	s := &trSession{cmd: tpCmd(ctx, args...), stdout: new(syncBuffer), stderr: new(syncBuffer), done: make(chan struct{})}
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		s.res = result{Stdout: s.stdout.String(), Stderr: s.stderr.String(), Code: code}
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
			<-s.done
		}
	})
	var m []string
	waitFor(t, 3*time.Minute, "the session's start-up line", func() error {
		if m = trStartupRe.FindStringSubmatch(s.stderr.String()); m != nil {
			return nil
		}
		select {
		case <-s.done:
			return nil // reported below
		default:
			return fmt.Errorf("stderr so far: %q", s.stderr.String())
		}
	})
	if m == nil {
		<-s.done
		t.Fatalf("the session ended without a start-up line: %s", s.res)
	}
	s.ID, s.Pod, s.Mode = m[1], m[3], m[4]
	if m[2] != ns {
		t.Fatalf("start-up line names namespace %q, want %q: %s", m[2], ns, m[0])
	}
	s.PodIP = strings.TrimSpace(kubectl(t, "get", "pod", "-n", ns, s.Pod, "-o", "jsonpath={.status.podIP}"))
	if _, err := netip.ParseAddr(s.PodIP); err != nil {
		t.Fatalf("proxy pod %s/%s has no IP (%q)", ns, s.Pod, s.PodIP)
	}
	return s
}

// release lets the script run.
func (s *trSession) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(s.stdin, "go\n"); err != nil {
		t.Fatalf("releasing the session's script: %v\n%s", err, s.stderr.String())
	}
}

// wait closes the child's stdin and waits (up to 3 minutes) for the session to end.
func (s *trSession) wait(t *testing.T) result {
	t.Helper()
	_ = s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the session did not end within 3 minutes; stdout so far:\n%s\nstderr so far:\n%s", s.stdout.String(), s.stderr.String())
	}
	return s.res
}

// waitResult waits for the "RESULT mode target" line of a running session and returns its value.
func (s *trSession) waitResult(t *testing.T, key string) string {
	t.Helper()
	var v string
	waitFor(t, 2*time.Minute, "result "+key, func() error {
		var ok bool
		if v, ok = trResults(s.stdout.String())[key]; ok {
			return nil
		}
		select {
		case <-s.done:
			t.Fatalf("the session ended before reporting %q: %s", key, s.res)
		default:
		}
		return fmt.Errorf("stdout so far: %q", s.stdout.String())
	})
	return v
}

// trResults reads the "RESULT MODE TARGET VALUE" lines of out into a map by "MODE TARGET".
func trResults(out string) map[string]string {
	res := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(strings.TrimSpace(line), " ", 4)
		if len(f) < 3 || f[0] != "RESULT" {
			continue
		}
		v := ""
		if len(f) == 4 {
			v = strings.TrimSpace(f[3])
		}
		res[f[1]+" "+f[2]] = v
	}
	return res
}

// trCheck is one expected result of a session's script.
type trCheck struct {
	key  string // "MODE TARGET"
	what string // what the value must be, for the failure message
	ok   func(v string) bool
}

func trEquals(want string) func(string) bool { return func(v string) bool { return v == want } }

// checkResults applies checks to the RESULT lines of r; a missing line fails its check.
func checkResults(t *testing.T, r result, checks []trCheck) {
	t.Helper()
	res := trResults(r.Stdout)
	failed := false
	for _, c := range checks {
		v, ok := res[c.key]
		switch {
		case !ok:
			t.Errorf("%s: no result, want %s", c.key, c.what)
			failed = true
		case !c.ok(v):
			t.Errorf("%s = %q, want %s", c.key, v, c.what)
			failed = true
		}
	}
	if failed {
		t.Logf("session output: %s", r)
	}
}

// userScript writes a client's source file (private to the unprivileged user, which runs it
// with an interpreter) under a unique name and returns its path.
func userScript(t *testing.T, name, content string) string {
	t.Helper()
	return userFile(t, randomSuffix()+"-"+name, content)
}

// localAddress reports whether ip is an address of one of this machine's interfaces.
func localAddress(t *testing.T, ip string) bool {
	t.Helper()
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == want.Unmap() {
			return true
		}
	}
	return false
}

// clusterIP returns the ClusterIP of Service ns/name.
func clusterIP(t *testing.T, ns, name string) string {
	t.Helper()
	ip := strings.TrimSpace(kubectl(t, "get", "service", "-n", ns, name, "-o", "jsonpath={.spec.clusterIP}"))
	if _, err := netip.ParseAddr(ip); err != nil {
		t.Fatalf("service %s/%s has no ClusterIP (%q)", ns, name, ip)
	}
	return ip
}

// peerFromHere asks /peer at url from the test process, outside any session: the answer must be
// an address of this machine, not the proxy pod's, or the /peer checks could not fail.
func peerFromHere(t *testing.T, url, podIP string) string {
	t.Helper()
	code, body := httpGet(t, url)
	peer := strings.TrimSpace(body)
	if code != http.StatusOK || peer == podIP || !localAddress(t, peer) {
		t.Fatalf("GET %s outside the session: %d %q; want 200 and an address of this machine (not the proxy pod's %s)", url, code, peer, podIP)
	}
	return peer
}

// buildNetprobe builds tests/e2e/clients/netprobe as a static binary the unprivileged user can run.
func buildNetprobe(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(workDir, "netprobe")
	build := exec.Command("go", "build", "-o", bin, "./tests/e2e/clients/netprobe")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building netprobe: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = os.Remove(bin) })
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has a program interpreter: want a static binary (CGO_ENABLED=0)", bin)
		}
	}
	return bin
}

// TestTransparentClients runs, in one transparent session, clients that know nothing of proxies
// (Node's fetch, Java's HttpClient, Python sockets over IPv4 and IPv6 and from a second thread, a
// static Go binary, curl as a grandchild, getent, dig) against a Service by every form of its
// name and by its ClusterIP: each request must come from the proxy pod. Node's resolver, curl's,
// Java and Go connect from threads other than the process's first one, as the Python thread does.
func TestTransparentClients(t *testing.T) {
	needFakeNameserver(t)
	for _, tool := range []string{"node", "java", "python3", "curl", "getent", "dig"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	ip := clusterIP(t, ns, "web")
	fqdn := "web." + ns + ".svc.cluster.local"
	targets := []string{"web", "web." + ns, "web." + ns + ".svc", fqdn, ip}
	netprobe := buildNetprobe(t)
	py := userScript(t, "client.py", trPython)
	js := userScript(t, "client.js", trNode)
	java := userScript(t, "Main.java", trJava)

	var urls, hostPorts []string
	for _, h := range targets {
		urls = append(urls, "http://"+h+":8080/peer")
		hostPorts = append(hostPorts, h+":8080")
	}
	lines := []string{
		`echo "RESULT env proxy HTTP_PROXY=${HTTP_PROXY-unset} http_proxy=${http_proxy-unset} ALL_PROXY=${ALL_PROXY-unset} JAVA_TOOL_OPTIONS=${JAVA_TOOL_OPTIONS-unset}"`,
		`echo "RESULT env tp TP_NAMESPACE=$TP_NAMESPACE TP_POD=$TP_POD TP_DNS=$TP_DNS"`,
		"node " + js + " " + strings.Join(urls, " "),
		"java " + java + " " + strings.Join(urls, " "),
		"python3 " + py + " peer4 " + strings.Join(targets, " "),
		"python3 " + py + " thread4 " + strings.Join(targets, " "),
		"python3 " + py + " peer6 ::ffff:" + ip,
		netprobe + " peer " + strings.Join(hostPorts, " "),
		netprobe + " many 500 web:8080",
		netprobe + " srv http tcp " + fqdn,
		`echo "RESULT getent web $(getent hosts web)"`,
		`echo "RESULT getent ` + fqdn + ` $(getent hosts ` + fqdn + `)"`,
		`echo "RESULT dig srv $(dig +short +time=5 +tries=1 SRV _http._tcp.` + fqdn + ` 2>&1)"`,
	}
	for _, h := range targets {
		lines = append(lines, `echo "RESULT grandchild `+h+` $(sh -c 'sh -c "curl -sS --max-time 60 http://`+h+`:8080/peer"' 2>&1)"`)
	}

	s := startTrSession(t, ns, nil, strings.Join(lines, "\n"))
	peerFromHere(t, "http://"+ip+":8080/peer", s.PodIP)
	s.release(t)
	r := s.wait(t)
	if r.Code != 0 {
		t.Errorf("kubectl tp run exited %d, want 0", r.Code)
	}
	wantMode := "transparent mode: cluster names (as 198.19.0.0/16) and "
	if !strings.HasPrefix(s.Mode, wantMode) || !strings.Contains(s.Mode, "go through the pod (DNS 127.0.0.1:") {
		t.Errorf("start-up line says %q, want it to start with %q and name the DNS server", s.Mode, wantMode)
	}

	pod := trEquals(s.PodIP)
	podWhat := "the proxy pod's IP " + s.PodIP
	synthetic := func(v string) bool { return strings.HasPrefix(v, "198.19.") }
	var checks []trCheck
	for _, client := range []string{"node", "java", "peer4", "thread4", "go", "grandchild"} {
		for _, h := range targets {
			checks = append(checks, trCheck{client + " " + h, podWhat, pod})
		}
	}
	for _, h := range targets[:4] {
		checks = append(checks, trCheck{"go lookup:" + h, "one synthetic address in 198.19.0.0/16", func(v string) bool {
			return synthetic(v) && !strings.Contains(v, ",")
		}})
	}
	checks = append(checks,
		trCheck{"go lookup:" + ip, "the ClusterIP itself", trEquals(ip)},
		trCheck{"peer6 ::ffff:" + ip, podWhat + " (AF_INET6 socket, v4-mapped ClusterIP)", pod},
		trCheck{"go many", "500/500 " + s.PodIP + " (500 connections open at once, all from the pod)", trEquals("500/500 " + s.PodIP)},
		trCheck{"go srv", "0 100 8080 " + fqdn + ". (Go's net.LookupSRV)", trEquals("0 100 8080 " + fqdn + ".")},
		trCheck{"dig srv", "0 100 8080 " + fqdn + ".", trEquals("0 100 8080 " + fqdn + ".")},
		trCheck{"getent web", "a 198.19.x.x address for web", func(v string) bool {
			f := strings.Fields(v)
			return len(f) == 2 && synthetic(f[0]) && f[1] == "web"
		}},
		trCheck{"getent " + fqdn, "a 198.19.x.x address for " + fqdn, func(v string) bool {
			f := strings.Fields(v)
			return len(f) == 2 && synthetic(f[0]) && f[1] == fqdn
		}},
		trCheck{"env proxy", "no proxy variables", trEquals("HTTP_PROXY=unset http_proxy=unset ALL_PROXY=unset JAVA_TOOL_OPTIONS=unset")},
		trCheck{"env tp", "TP_NAMESPACE, TP_POD and TP_DNS of the session", func(v string) bool {
			return strings.HasPrefix(v, "TP_NAMESPACE="+ns+" TP_POD="+s.Pod+" TP_DNS=127.0.0.1:")
		}},
	)
	checkResults(t, r, checks)
	noPodsLeft(t, ns, 30*time.Second)
}

// TestTransparentLeavesTheRestAlone checks that a transparent session changes nothing but the
// cluster's traffic of its own child: local services, local names and the child's own server work
// as without kubectl-tp, and a process outside the session still reaches the ClusterIP directly.
func TestTransparentLeavesTheRestAlone(t *testing.T) {
	needFakeNameserver(t)
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	ip := clusterIP(t, ns, "web")
	py := userScript(t, "client.py", trPython)

	// A local service of the test process, on every address: it answers the caller's address.
	var hits atomic.Int32
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	lan := lanAddress(t)

	// The laptop's view of names, outside any session.
	localhost, err := exec.Command("getent", "hosts", "localhost").Output()
	if err != nil {
		t.Fatalf("getent hosts localhost outside the session: %v", err)
	}
	laptopResolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(fakeNameserverIP, "53"))
	}}
	laptopOnly, err := laptopResolver.LookupHost(context.Background(), strings.TrimSuffix(laptopOnlyName, "."))
	if err != nil || len(laptopOnly) != 1 || laptopOnly[0] != laptopOnlyAddr {
		t.Fatalf("the fake laptop nameserver answers %v, %v for %s; want [%s]", laptopOnly, err, laptopOnlyName, laptopOnlyAddr)
	}

	marker := "served-by-the-child-" + randomSuffix()
	script := strings.Join([]string{
		`echo "RESULT curl loopback $(curl -sS --max-time 30 http://127.0.0.1:` + port + `/ 2>&1)"`,
		`echo "RESULT curl lan $(curl -sS --max-time 30 http://` + lan + `:` + port + `/ 2>&1)"`,
		`echo "RESULT getent localhost $(getent hosts localhost)"`,
		`echo "RESULT getent laptop-only $(getent hosts ` + strings.TrimSuffix(laptopOnlyName, ".") + `)"`,
		`echo "RESULT curl clusterip $(curl -sS --max-time 30 http://` + ip + `:8080/peer 2>&1)"`,
		`d=$(mktemp -d) && echo ` + marker + ` > "$d/marker" && python3 ` + py + ` serve "$d"`,
	}, "\n")
	s := startTrSession(t, ns, nil, script)
	if ranges := trRanges(s.Mode); len(ranges) == 0 {
		t.Fatalf("no cluster ranges in the start-up line %q", s.Mode)
	} else {
		for _, p := range ranges {
			if p.Contains(netip.MustParseAddr(lan)) {
				t.Fatalf("this machine's address %s lies in the cluster range %s: the test cannot tell local from cluster traffic", lan, p)
			}
		}
	}
	s.release(t)

	// (c) The child's own server is reachable from outside the session.
	childPort := s.waitResult(t, "serve port")
	if code, body := httpGet(t, "http://127.0.0.1:"+childPort+"/marker"); code != 200 || strings.TrimSpace(body) != marker {
		t.Errorf("GET /marker from the child's server: %d %q, want 200 %q", code, body, marker)
	}
	// (d) At the same time, a process of the same user outside the session reaches the ClusterIP
	// directly: /peer sees this machine, not the pod.
	sibling := exec.Command("curl", "-sS", "--max-time", "30", "http://"+ip+":8080/peer")
	sibling.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := sibling.CombinedOutput()
	if peer := strings.TrimSpace(string(out)); err != nil || peer == s.PodIP || !localAddress(t, peer) {
		t.Errorf("curl of the ClusterIP's /peer outside the session, during it: %v %q; want an address of this machine, not the proxy pod's %s", err, out, s.PodIP)
	}
	r := s.wait(t)
	if r.Code != 0 {
		t.Errorf("kubectl tp run exited %d, want 0", r.Code)
	}
	checkResults(t, r, []trCheck{
		{"curl loopback", "127.0.0.1 (a direct connection to the test's local server)", trEquals("127.0.0.1")},
		{"curl lan", lan + " (a direct connection to this machine's address)", trEquals(lan)},
		{"getent localhost", "what it is outside the session: " + strings.TrimSpace(string(localhost)), func(v string) bool {
			return strings.Join(strings.Fields(v), " ") == strings.Join(strings.Fields(string(localhost)), " ")
		}},
		{"getent laptop-only", laptopOnlyAddr + " " + strings.TrimSuffix(laptopOnlyName, ".") + " (the laptop's nameserver's answer)", func(v string) bool {
			return strings.Join(strings.Fields(v), " ") == laptopOnlyAddr+" "+strings.TrimSuffix(laptopOnlyName, ".")
		}},
		{"curl clusterip", "the proxy pod's IP " + s.PodIP, trEquals(s.PodIP)},
	})
	if hits.Load() < 2 {
		t.Errorf("the test's local server saw %d requests, want the child's 2", hits.Load())
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// lanAddress returns this machine's address on its default route (no packet is sent).
func lanAddress(t *testing.T) string {
	t.Helper()
	c, err := net.Dial("udp4", "198.51.100.1:9")
	if err != nil {
		t.Fatalf("finding this machine's address on its default route: %v", err)
	}
	defer c.Close()
	a := c.LocalAddr().(*net.UDPAddr).IP.String()
	if !localAddress(t, a) || net.ParseIP(a).IsLoopback() {
		t.Fatalf("address on the default route %s is not a non-loopback address of this machine", a)
	}
	return a
}

// trRanges reads the literal ranges of a transparent start-up line ("… and A, B go through the pod").
func trRanges(mode string) []netip.Prefix {
	_, rest, ok := strings.Cut(mode, ") and ")
	if !ok {
		return nil
	}
	rest, _, _ = strings.Cut(rest, " go through")
	var out []netip.Prefix
	for _, f := range strings.Split(rest, ", ") {
		if p, err := netip.ParsePrefix(strings.TrimSpace(f)); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// TestTransparentDNS checks the session's DNS as the child sees it through libc and dig: unknown
// cluster names fail fast without asking the laptop's nameserver, AAAA of a Service is empty,
// laptop names come from the laptop's nameserver, and the laptop's search suffix does not hide
// cluster names.
func TestTransparentDNS(t *testing.T) {
	needFakeNameserver(t)
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	fqdn := "web." + ns + ".svc.cluster.local"
	unknown := "unknown." + ns + ".svc.cluster.local"
	py := userScript(t, "client.py", trPython)
	laptopOnly := strings.TrimSuffix(laptopOnlyName, ".")
	suffixed := "web." + laptopSearch
	before := fakeDNS.queries(laptopOnlyName)

	ms := func(label, cmd string) string { // runs cmd; reports its exit code, duration and output
		return `s=$(date +%s%N); o=$(` + cmd + ` 2>&1); rc=$?; e=$(date +%s%N); echo "RESULT ` + label + ` rc=$rc ms=$(( (e - s) / 1000000 )) $o"`
	}
	script := strings.Join([]string{
		ms("getent unknown", "getent hosts "+unknown),
		"python3 " + py + " aaaa web",
		`echo "RESULT dig aaaa $(dig +time=5 +tries=1 AAAA ` + fqdn + ` | grep -Eo 'status: [A-Z]+|ANSWER: [0-9]+' | tr '\n' ' ')"`,
		`echo "RESULT getent laptop-only $(getent hosts ` + laptopOnly + `)"`,
		`echo "RESULT getent search $(LOCALDOMAIN=` + laptopSearch + ` getent hosts web)"`,
		`echo "RESULT getent suffixed $(getent hosts ` + suffixed + `)"`,
	}, "\n")
	r := tp(t, "run", "-n", ns, "--quiet", "--", "sh", "-c", script)
	if r.Code != 0 {
		t.Errorf("kubectl tp run exited %d, want 0", r.Code)
	}
	checkResults(t, r, []trCheck{
		{"getent unknown", "exit code 2 (NXDOMAIN) within 5 s, no output", func(v string) bool {
			var rc, took int
			_, err := fmt.Sscanf(v, "rc=%d ms=%d", &rc, &took)
			return err == nil && rc == 2 && took < 5000 && len(strings.Fields(v)) == 2
		}},
		{"aaaa web", "a gaierror within 5 s (no IPv6 address for a Service)", func(v string) bool {
			i := strings.LastIndex(v, " in=")
			if i < 0 || !strings.HasPrefix(v, "gaierror ") {
				return false
			}
			took, err := strconv.ParseFloat(v[i+4:], 64)
			return err == nil && took < 5
		}},
		{"dig aaaa", "status: NOERROR ANSWER: 0 (an empty answer)", trEquals("status: NOERROR ANSWER: 0")},
		{"getent laptop-only", laptopOnlyAddr + " " + laptopOnly, func(v string) bool {
			return strings.Join(strings.Fields(v), " ") == laptopOnlyAddr+" "+laptopOnly
		}},
		{"getent search", "a 198.19.x.x address owned by " + suffixed + " (the laptop's search suffix, answered from the cluster)", func(v string) bool {
			f := strings.Fields(v)
			return len(f) == 2 && strings.HasPrefix(f[0], "198.19.") && f[1] == suffixed
		}},
		{"getent suffixed", "a 198.19.x.x address for " + suffixed, func(v string) bool {
			f := strings.Fields(v)
			return len(f) == 2 && strings.HasPrefix(f[0], "198.19.") && f[1] == suffixed
		}},
	})
	if n := fakeDNS.queries(laptopOnlyName) - before; n == 0 {
		t.Errorf("the laptop's nameserver was not asked for %s: the answer did not come from it", laptopOnlyName)
	}
	for _, name := range []string{unknown, fqdn, suffixed} {
		if n := fakeDNS.queries(name); n != 0 {
			t.Errorf("the laptop's nameserver was asked for %s %d times, want never (a cluster name)", name, n)
		}
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestTransparentFailsClosed checks that a cluster destination the tunnel cannot carry fails in
// the child, and never falls back to what the address means locally.
func TestTransparentFailsClosed(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	// Service "closed" sends port 7777 to the web pod, where nothing listens: the pod's dial is
	// refused. (A port the Service does not define would not be refused but dropped.)
	apply(t, ns, `
apiVersion: v1
kind: Service
metadata: {name: closed}
spec:
  selector: {app: web}
  ports: [{name: closed, port: 7777}]
`)
	closedIP := clusterIP(t, ns, "closed")
	waitFor(t, 30*time.Second, "kube-proxy to reject "+closedIP+":7777", func() error {
		c, err := net.DialTimeout("tcp", closedIP+":7777", time.Second)
		if err == nil {
			c.Close()
			return errors.New("connected")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		return nil
	})
	// A local server on 127.0.0.9, which --also-proxy moves into the cluster.
	var accepted atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.9:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	local := l.Addr().(*net.TCPAddr)
	localPort := strconv.Itoa(local.Port)
	py := userScript(t, "client.py", trPython)
	connect := func(mode, host, port string) string { return "python3 " + py + " " + mode + " " + host + " " + port }

	r := tp(t, "run", "-n", ns, "--quiet", "--also-proxy", "127.0.0.9/32", "--", "sh", "-c", strings.Join([]string{
		connect("blocking", closedIP, "7777"),
		connect("nonblocking", closedIP, "7777"),
		connect("udp", closedIP, "9999"),
		connect("blocking", "198.19.250.250", "80"),
		connect("blocking", "127.0.0.9", localPort),
	}, "\n"))
	if r.Code != 0 {
		t.Errorf("kubectl tp run --also-proxy 127.0.0.9/32 exited %d, want 0", r.Code)
	}
	checkResults(t, r, []trCheck{
		{"blocking " + closedIP + ":7777", "ECONNREFUSED (the pod's dial was refused)", trEquals("ECONNREFUSED")},
		{"nonblocking " + closedIP + ":7777", "ECONNRESET or ECONNREFUSED", func(v string) bool { return v == "ECONNRESET" || v == "ECONNREFUSED" }},
		{"udp " + closedIP + ":9999", "ENETUNREACH (UDP to the cluster other than DNS is not carried)", trEquals("ENETUNREACH")},
		{"blocking 198.19.250.250:80", "ENETUNREACH (a synthetic address never handed out)", trEquals("ENETUNREACH")},
		{"blocking 127.0.0.9:" + localPort, "ECONNREFUSED (--also-proxy sent it to the cluster, where nothing listens)", trEquals("ECONNREFUSED")},
	})
	if n := accepted.Load(); n != 0 {
		t.Errorf("the local server on %s accepted %d connections during the --also-proxy session, want 0", local, n)
	}

	// Without --also-proxy the same connect reaches the local server.
	r = tp(t, "run", "-n", ns, "--quiet", "--", "sh", "-c", connect("blocking", "127.0.0.9", localPort))
	if r.Code != 0 {
		t.Errorf("kubectl tp run exited %d, want 0", r.Code)
	}
	checkResults(t, r, []trCheck{{"blocking 127.0.0.9:" + localPort, "connected (127.0.0.9 is local without --also-proxy)", trEquals("connected")}})
	if n := accepted.Load(); n != 1 {
		t.Errorf("the local server on %s accepted %d connections, want the child's 1", local, n)
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestTransparentOff checks proxy-variables mode, chosen with --transparent=false or forced by a
// session inside another session's child, where the kernel refuses a second supervisor.
func TestTransparentOff(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")

	t.Run("--transparent=false", func(t *testing.T) {
		s := startTrSession(t, ns, []string{"--transparent=false"}, strings.Join([]string{
			`echo "RESULT env proxy $HTTP_PROXY"`,
			`echo "RESULT curl web $(curl -sS --max-time 30 http://web:8080/peer 2>&1)"`,
		}, "\n"))
		s.release(t)
		r := s.wait(t)
		if r.Code != 0 {
			t.Errorf("kubectl tp run exited %d, want 0", r.Code)
		}
		if !strings.HasPrefix(s.Mode, "proxy variables: SOCKS5 127.0.0.1:") {
			t.Errorf("start-up line says %q, want \"proxy variables: SOCKS5 127.0.0.1:…\"", s.Mode)
		}
		checkResults(t, r, []trCheck{
			{"env proxy", "HTTP_PROXY=http://…@127.0.0.1:PORT", func(v string) bool {
				return strings.HasPrefix(v, "http://") && strings.Contains(v, "@127.0.0.1:")
			}},
			{"curl web", "the proxy pod's IP " + s.PodIP + " (curl through HTTP_PROXY)", trEquals(s.PodIP)},
		})
	})

	nested := func(innerFlags ...string) result {
		inner := append(append([]string{pluginBin, "run", "-n", ns}, innerFlags...), "--", "sh", "-c", "curl -sS --max-time 30 http://web:8080/color")
		return tp(t, append([]string{"run", "-n", ns, "--quiet", "--"}, inner...)...)
	}
	t.Run("nested session falls back", func(t *testing.T) {
		r := nested()
		if r.Code != 0 {
			t.Fatalf("nested session exited %d, want 0: %s", r.Code, r)
		}
		for _, want := range []string{
			"kubectl-tp: transparent mode unavailable: ",
			"; the command gets proxy variables only\n",
			"proxy variables: SOCKS5 127.0.0.1:",
		} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr lacks %q\n%s", want, r)
			}
		}
		if strings.TrimSpace(r.Stdout) != "green" {
			t.Errorf("the inner session's curl printed %q, want green (through its proxy variables)\n%s", r.Stdout, r)
		}
	})
	t.Run("nested session with --transparent=true fails", func(t *testing.T) {
		r := nested("--transparent=true")
		if r.Code == 0 {
			t.Fatalf("nested session with --transparent=true exited 0, want non-zero: %s", r)
		}
		if !strings.Contains(r.Stderr, "transparent mode cannot work here: ") {
			t.Errorf("stderr lacks \"transparent mode cannot work here: \"\n%s", r)
		}
		if strings.Contains(r.Stdout, "green") {
			t.Errorf("the inner command ran although its session failed\n%s", r)
		}
	})
	noPodsLeft(t, ns, 30*time.Second)
}

// TestTransparentBadInput checks that a bad --also-proxy gives one clear line and creates nothing.
func TestTransparentBadInput(t *testing.T) {
	ns := namespace(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"not a range", []string{"--also-proxy", "notacidr"}, `--also-proxy "notacidr" is not a range`},
		{"without transparent mode", []string{"--transparent=false", "--also-proxy", "10.20.0.0/16"}, "--also-proxy works in transparent mode only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tp(t, append(append([]string{"run", "-n", ns}, tc.args...), "--", "true")...)
			if r.Code == 0 {
				t.Fatalf("exit code 0, want non-zero\n%s", r)
			}
			msg := strings.TrimSpace(r.Stderr)
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "kubectl tp: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("stderr %q, want one line starting with \"kubectl tp: \" and containing %q", msg, tc.want)
			}
			noPodsLeft(t, ns, 20*time.Second)
		})
	}
}
