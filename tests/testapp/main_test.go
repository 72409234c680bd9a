package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain runs main instead of the tests when the test binary is started as the app.
func TestMain(m *testing.M) {
	if os.Getenv("TESTAPP_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestHandlers(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(file, []byte("hello file"), 0o644); err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/x-upstream")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "from upstream "+r.URL.Path)
	}))
	defer upstream.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String() + "/"
	dead.Close()

	a := &app{hostname: "pod-1", color: "blue", caPEM: []byte("PEM")}
	tests := []struct {
		name       string
		target     string
		wantStatus int
		wantBody   string // exact body, checked when wantLen is zero
		wantLen    int64  // expected body length and Content-Length, when non-zero
		wantType   string
		bodyHas    string // substring of the body, checked when non-empty
	}{
		{name: "root", target: "/", wantStatus: 200, wantBody: "testapp pod-1\n"},
		{name: "unknown path", target: "/nope", wantStatus: 404, bodyHas: "not found"},
		{name: "color", target: "/color", wantStatus: 200, wantBody: "blue\n"},
		{name: "peer", target: "/peer", wantStatus: 200, wantBody: "192.0.2.1\n"},
		{name: "healthz", target: "/healthz", wantStatus: 200, wantBody: "ok"},
		{name: "ca.pem", target: "/ca.pem", wantStatus: 200, wantBody: "PEM", wantType: "application/x-pem-file"},
		{name: "file", target: "/file?path=" + file, wantStatus: 200, wantBody: "hello file", wantLen: 10},
		{name: "file missing", target: "/file?path=" + filepath.Join(dir, "nope"), wantStatus: 404, bodyHas: "no such file"},
		{name: "file is dir", target: "/file?path=" + dir, wantStatus: 400, bodyHas: "not a regular file"},
		{name: "file no path", target: "/file", wantStatus: 400, bodyHas: "missing path"},
		{name: "bytes 0", target: "/bytes?mb=0", wantStatus: 200, wantBody: ""},
		{name: "bytes 3", target: "/bytes?mb=3", wantStatus: 200, wantLen: 3 << 20, wantType: "application/octet-stream"},
		{name: "bytes negative", target: "/bytes?mb=-1", wantStatus: 400, bodyHas: "mb must be"},
		{name: "bytes not a number", target: "/bytes?mb=x", wantStatus: 400, bodyHas: "mb must be"},
		{name: "bytes too many", target: "/bytes?mb=" + strconv.Itoa(maxMiB+1), wantStatus: 400, bodyHas: "mb must be"},
		{name: "fetch", target: "/fetch?url=" + upstream.URL + "/x", wantStatus: http.StatusTeapot, wantBody: "from upstream /x", wantType: "text/x-upstream"},
		{name: "fetch refused", target: "/fetch?url=" + deadURL, wantStatus: 502, bodyHas: "refused"},
		{name: "fetch bad url", target: "/fetch?url=nope://x", wantStatus: 502, bodyHas: "unsupported protocol"},
		{name: "fetch no url", target: "/fetch", wantStatus: 400, bodyHas: "missing url"},
		{name: "post root", target: "/", wantStatus: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodGet
			if strings.HasPrefix(tt.name, "post") {
				method = http.MethodPost
			}
			rec := httptest.NewRecorder()
			a.handler().ServeHTTP(rec, httptest.NewRequest(method, tt.target, nil))
			body := rec.Body.Bytes()
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", rec.Code, tt.wantStatus, body)
			}
			switch {
			case tt.wantLen != 0:
				if int64(len(body)) != tt.wantLen {
					t.Errorf("body length = %d, want %d", len(body), tt.wantLen)
				}
				if cl := rec.Header().Get("Content-Length"); cl != strconv.FormatInt(tt.wantLen, 10) {
					t.Errorf("Content-Length = %q, want %d", cl, tt.wantLen)
				}
				if tt.wantBody != "" && string(body) != tt.wantBody {
					t.Errorf("body = %q, want %q", body, tt.wantBody)
				}
			case tt.bodyHas != "":
				if !bytes.Contains(body, []byte(tt.bodyHas)) {
					t.Errorf("body = %q, want it to contain %q", body, tt.bodyHas)
				}
			case tt.wantStatus == 200 || tt.wantBody != "":
				if string(body) != tt.wantBody {
					t.Errorf("body = %q, want %q", body, tt.wantBody)
				}
			}
			if tt.wantType != "" && rec.Header().Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type = %q, want %q", rec.Header().Get("Content-Type"), tt.wantType)
			}
		})
	}
}

func TestBytesContent(t *testing.T) {
	rec := httptest.NewRecorder()
	handleBytes(rec, httptest.NewRequest("GET", "/bytes?mb=2", nil))
	want := append(append([]byte{}, mib...), mib...)
	if !bytes.Equal(rec.Body.Bytes(), want) {
		t.Fatal("/bytes?mb=2 is not two copies of the filler MiB")
	}
	// Incompressible: gzip at its best cannot shrink it (a compressing hop could not flatter a benchmark).
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	_, _ = zw.Write(mib)
	_ = zw.Close()
	if z.Len() < len(mib) {
		t.Errorf("the /bytes payload compresses from %d to %d bytes; it must be incompressible", len(mib), z.Len())
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("TESTAPP_PROBE", "a=b c")
	rec := httptest.NewRecorder()
	handleEnv(rec, httptest.NewRequest("GET", "/env", nil))
	var env map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
		t.Fatalf("body is not a JSON object: %v", err)
	}
	if env["TESTAPP_PROBE"] != "a=b c" {
		t.Errorf("TESTAPP_PROBE = %q, want %q", env["TESTAPP_PROBE"], "a=b c")
	}
	if rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
	}
}

func TestHealthHandler(t *testing.T) {
	tests := []struct {
		target     string
		wantStatus int
	}{
		{"/healthz", 200},
		{"/", 404},
		{"/color", 404},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			healthHandler().ServeHTTP(rec, httptest.NewRequest("GET", tt.target, nil))
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr bool
	}{
		{
			name: "defaults",
			want: config{httpAddr: ":8080", httpsAddr: ":8443", echoAddr: ":9000", healthAddr: ":8081", tlsNames: []string{"localhost"}, color: "green", probeEvery: 50 * time.Millisecond},
		},
		{
			name: "env",
			env:  map[string]string{"HTTP_ADDR": ":80", "COLOR": "red"},
			want: config{httpAddr: ":80", httpsAddr: ":8443", echoAddr: ":9000", healthAddr: ":8081", tlsNames: []string{"localhost"}, color: "red", probeEvery: 50 * time.Millisecond},
		},
		{
			name: "flags beat env",
			args: []string{"-http", ":1", "-https", "", "-echo", ":2", "-health", ":3", "-tls-names", "a.svc, 10.0.0.1", "-color", "blue", "-drain", "2s", "-probe", "http://api/color", "-probe-every", "10ms"},
			env:  map[string]string{"HTTP_ADDR": ":80", "COLOR": "red"},
			want: config{httpAddr: ":1", httpsAddr: "", echoAddr: ":2", healthAddr: ":3", tlsNames: []string{"a.svc", "10.0.0.1"}, color: "blue", drain: 2 * time.Second, probeURL: "http://api/color", probeEvery: 10 * time.Millisecond},
		},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("testapp", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got, err := parseFlags(fs, tt.args, func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSelfSignedCert(t *testing.T) {
	now := time.Now()
	_, caPEM, err := selfSignedCert([]string{"localhost", "testapp.default.svc", "127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	cert := parsePEM(t, caPEM)
	tests := []struct {
		name    string
		wantErr bool
	}{
		{"localhost", false},
		{"testapp.default.svc", false},
		{"127.0.0.1", false},
		{"other.example", true},
		{"10.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cert.Verify(x509.VerifyOptions{DNSName: tt.name, Roots: pool, CurrentTime: now})
			if (err != nil) != tt.wantErr {
				t.Errorf("Verify(%s) error = %v, want error %v", tt.name, err, tt.wantErr)
			}
		})
	}
}

// parsePEM parses the first certificate of a PEM document.
func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("no certificate in %q", b)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEchoServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := newEchoServer(ln)
	done := make(chan error, 1)
	go func() { done <- e.serve() }()

	tests := []struct {
		name string
		msg  []byte
	}{
		{"line", []byte("hello echo\n")},
		{"binary", []byte{0, 1, 2, 255, 254}},
		{"large", bytes.Repeat([]byte("0123456789"), 100000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() {
				c.Write(tt.msg)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.msg) {
				t.Errorf("echoed %d bytes, want the %d sent", len(got), len(tt.msg))
			}
		})
	}

	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// Wait until the idle connection is accepted, so close must end it.
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(idle, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	e.close()
	if err := <-done; err != nil {
		t.Errorf("serve after close = %v, want nil", err)
	}
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection read after close = %d, %v; want EOF", n, err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("listener still accepts after close")
	}
}

func TestStartServesAllPorts(t *testing.T) {
	s, err := start(config{
		httpAddr: "127.0.0.1:0", httpsAddr: "127.0.0.1:0", echoAddr: "127.0.0.1:0", healthAddr: "127.0.0.1:0",
		tlsNames: []string{"localhost", "127.0.0.1"}, color: "purple",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.shutdown(context.Background())
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(c *http.Client, url string) string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %q, %v", url, resp.StatusCode, b, err)
		}
		return string(b)
	}
	caPEM := get(client, "http://"+s.httpAddr+"/ca.pem")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatalf("/ca.pem is not a certificate: %q", caPEM)
	}
	tlsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	_, httpsPort, _ := net.SplitHostPort(s.httpsAddr)

	tests := []struct {
		name   string
		client *http.Client
		url    string
		want   string
	}{
		{"http color", client, "http://" + s.httpAddr + "/color", "purple\n"},
		{"https by name", tlsClient, "https://localhost:" + httpsPort + "/color", "purple\n"},
		{"https by ip", tlsClient, "https://" + s.httpsAddr + "/healthz", "ok"},
		{"health port", client, "http://" + s.healthAddr + "/healthz", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := get(tt.client, tt.url); got != tt.want {
				t.Errorf("GET %s = %q, want %q", tt.url, got, tt.want)
			}
		})
	}

	c, err := net.DialTimeout("tcp", s.echoAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("echo = %q, %v; want %q", line, err, "ping\n")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, addr := range []string{s.httpAddr, s.httpsAddr, s.echoAddr, s.healthAddr} {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still accepts after shutdown", addr)
		}
	}
}

func TestStartListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = start(config{httpAddr: "127.0.0.1:0", echoAddr: busy.Addr().String(), tlsNames: []string{"localhost"}})
	if err == nil || !strings.Contains(err.Error(), "listen on "+busy.Addr().String()) {
		t.Fatalf("start error = %v, want a listen error naming %s", err, busy.Addr())
	}
}

func TestSIGTERMExitsZero(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-http", "127.0.0.1:0", "-https", "127.0.0.1:0", "-echo", "127.0.0.1:0", "-health", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "TESTAPP_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stderr)
	listening := false
	for !listening && lines.Scan() {
		listening = strings.Contains(lines.Text(), "testapp: listening")
	}
	if !listening {
		t.Fatal("testapp never logged that it was listening")
	}
	go io.Copy(io.Discard, stderr)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("testapp exited with %v after SIGTERM, want exit status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("testapp did not exit within 10s of SIGTERM")
	}
}
