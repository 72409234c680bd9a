package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/proxy"
)

// The bench binary re-executes itself (a static copy, so it also runs in a pod) in one of these
// child modes, chosen with -child:
//
//	agent       run as a kubectl-tp session's command: read one JSON op per stdin line, run it through
//	            the session's proxies (ALL_PROXY, HTTP_PROXY) or, without Via, straight (in a
//	            transparent session the kernel's connect is trapped) and answer one JSON result line
//	serve ADDR  serve /bytes?mb=N and /color on ADDR until stdin closes (the local server for --expose)
//	sink ADDR   serve POST /sink (discards the body) and GET /bytes on ADDR (in the cluster client pod)
//	fetch URL   GET URL, discard the body and print {"seconds":…,"bytes":…} (kubectl exec'd in the pod)
//	latency URL N, connrate ADDR SECONDS  one op each, without the stdin protocol, using ALL_PROXY

// op is one measurement the agent (or the parent, for the baseline) runs.
type op struct {
	// Op is bulk, latency, connrate, hold, connect or exec.
	Op string `json:"op"`
	// URL is the target (host:port for connrate; IP:port for connect, "" for a loopback listener
	// of the process that runs the op).
	URL string `json:"url"`
	// Via is "socks" (ALL_PROXY), "http" (HTTP_PROXY) or "" (direct).
	Via string `json:"via,omitempty"`
	// Streams is the number of parallel curls (bulk) or connections (hold).
	Streams int `json:"streams,omitempty"`
	// N is the request count for latency, the connect count for connect and the run count for exec.
	N int `json:"n,omitempty"`
	// Max bounds latency and connrate runs; for hold, how long the connections stay open.
	Max time.Duration `json:"max,omitempty"`
	// KeepAlive reuses one connection for every latency request.
	KeepAlive bool `json:"keepalive,omitempty"`
	// Workers is the number of concurrent dialers for connrate.
	Workers int `json:"workers,omitempty"`
	// Nonblock makes connect use non-blocking sockets (connect(2) returns EINPROGRESS).
	Nonblock bool `json:"nonblock,omitempty"`
	// Carried makes connect fail unless transparent mode carried the connections.
	Carried bool `json:"carried,omitempty"`
	// Args is the command exec runs N times, one after the other.
	Args []string `json:"args,omitempty"`
	// Header, "NAME=VALUE", is sent with every latency request.
	Header string `json:"header,omitempty"`
}

// result is what an op measured.
type result struct {
	// Value is MB/s (bulk), connections/s (connrate) or seconds for all runs (exec).
	Value float64 `json:"value,omitempty"`
	// P50 and P99 are request latencies in milliseconds (connect: connect(2) times in µs).
	P50 float64 `json:"p50,omitempty"`
	P99 float64 `json:"p99,omitempty"`
	// Count is how many requests or connections completed; Errors how many failed.
	Count  int    `json:"count,omitempty"`
	Errors int    `json:"errors,omitempty"`
	Err    string `json:"err,omitempty"`
	// Pod is the session's pod (first line of agent and serve).
	Pod string `json:"pod,omitempty"`
}

// runChild runs the child mode named by -child with the remaining arguments.
func runChild(mode string, args []string) error {
	switch mode {
	case "agent":
		return agent(os.Stdin, os.Stdout)
	case "serve", "sink":
		if len(args) != 1 {
			return fmt.Errorf("-child %s ADDR", mode)
		}
		return serve(mode, args[0])
	case "fetch":
		if len(args) < 1 || len(args) > 2 {
			return errors.New("-child fetch URL [NAME=VALUE]")
		}
		req, err := http.NewRequest(http.MethodGet, args[0], nil)
		if err != nil {
			return err
		}
		if len(args) == 2 {
			name, value, _ := strings.Cut(args[1], "=")
			req.Header.Set(name, value)
		}
		t0 := time.Now()
		resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", args[0], resp.Status)
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"seconds": time.Since(t0).Seconds(), "bytes": n})
	case "latency-in":
		// In the cluster: kept-alive requests straight to URL (no proxy), with an optional header.
		if len(args) < 2 || len(args) > 3 {
			return errors.New("-child latency-in URL N [NAME=VALUE]")
		}
		n, _ := strconv.Atoi(args[1])
		o := op{Op: "latency", URL: args[0], N: n, Max: time.Minute, KeepAlive: true}
		if len(args) == 3 {
			o.Header = args[2]
		}
		return json.NewEncoder(os.Stdout).Encode(do(o))
	case "latency", "connrate":
		if len(args) != 2 {
			return fmt.Errorf("-child %s TARGET N", mode)
		}
		n, _ := strconv.Atoi(args[1])
		o := op{Op: mode, URL: args[0], Via: "socks", N: n, Max: time.Minute, KeepAlive: true, Workers: 8}
		if mode == "connrate" {
			o.Max = time.Duration(n) * time.Second
		}
		return json.NewEncoder(os.Stdout).Encode(do(o))
	}
	return fmt.Errorf("unknown -child %q", mode)
}

// agent answers ops read from in, one JSON line each, until in closes.
func agent(in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	if err := enc.Encode(result{Pod: os.Getenv("TP_POD")}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var o op
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			return err
		}
		if err := enc.Encode(do(o)); err != nil {
			return err
		}
	}
	return sc.Err()
}

// mib is what /bytes writes (once per MiB) and upload sends: random bytes from a fixed seed, so no
// layer on the path could compress them (a window under 1 MiB sees no repeat either).
var mib = func() []byte {
	b := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{'t', 'p'}).Read(b)
	return b
}()

// serve runs the local server (serve) or the in-cluster sink (sink) on addr.
func serve(mode, addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("mb"))
		if err != nil || n < 0 || n > 1<<16 {
			http.Error(w, "bad mb", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n<<20))
		for range n {
			if _, err := w.Write(mib); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /color", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "bench\n") })
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, n)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	if mode == "sink" {
		select {} // runs until the pod is deleted
	}
	if err := json.NewEncoder(os.Stdout).Encode(result{Pod: os.Getenv("TP_POD")}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return srv.Close()
}

// proxyURL returns the proxy URL for via from the environment (nil for direct).
func proxyURL(via string) (*url.URL, error) {
	var s string
	switch via {
	case "":
		return nil, nil
	case "socks":
		s = os.Getenv("ALL_PROXY")
	case "http":
		s = os.Getenv("HTTP_PROXY")
	default:
		return nil, fmt.Errorf("unknown via %q", via)
	}
	if s == "" {
		return nil, fmt.Errorf("no proxy for %q in the environment", via)
	}
	return url.Parse(s)
}

// do runs o and returns its result (errors in Err).
func do(o op) result {
	r, err := doErr(o)
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

func doErr(o op) (result, error) {
	pu, err := proxyURL(o.Via)
	if err != nil {
		return result{}, err
	}
	switch o.Op {
	case "bulk":
		return bulk(pu, o.URL, max(o.Streams, 1))
	case "latency":
		return latencyRun(pu, o.URL, o.N, o.Max, o.KeepAlive, o.Header)
	case "connrate":
		return connRate(pu, o.URL, o.Max, max(o.Workers, 1))
	case "hold":
		return hold(pu, o.URL, o.Streams, o.Max)
	case "connect":
		if pu != nil {
			return result{}, errors.New("connect goes straight (no Via)")
		}
		return connectRun(o.URL, o.N, o.Nonblock, o.Carried, o.Max)
	case "exec":
		if pu != nil {
			return result{}, errors.New("exec takes no Via")
		}
		return execRun(o.Args, o.N)
	}
	return result{}, fmt.Errorf("unknown op %q", o.Op)
}

// bulk downloads url with streams parallel curls and returns the aggregate MB/s (bytes over wall time).
func bulk(pu *url.URL, u string, streams int) (result, error) {
	args := []string{"-sf", "-o", "/dev/null", "-w", "%{size_download}\n"}
	if pu != nil {
		args = append(args, "-x", pu.String())
	} else {
		args = append(args, "--noproxy", "*")
	}
	args = append(args, u)
	var total atomic.Int64
	errs := make(chan error, streams)
	t0 := time.Now()
	for range streams {
		go func() {
			out, err := exec.Command("curl", args...).Output()
			if err != nil {
				errs <- fmt.Errorf("curl %s: %w", u, err)
				return
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
			total.Add(n)
			errs <- nil
		}()
	}
	var first error
	for range streams {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return result{}, first
	}
	return result{Value: float64(total.Load()) / 1e6 / time.Since(t0).Seconds(), Count: streams}, nil
}

// latencyRun times up to n GETs of u (one warm-up first), stopping after maxDur, on one kept-alive
// connection or on a new connection each.
func latencyRun(pu *url.URL, u string, n int, maxDur time.Duration, keepAlive bool, header string) (result, error) {
	tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1, DisableCompression: true}
	if pu != nil {
		tr.Proxy = http.ProxyURL(pu)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return result{}, err
	}
	if name, value, ok := strings.Cut(header, "="); ok {
		req.Header.Set(name, value)
	}
	get := func() error {
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", u, resp.Status)
		}
		return err
	}
	if err := get(); err != nil {
		return result{}, err
	}
	var ds []float64
	deadline := time.Now().Add(maxDur)
	for len(ds) < n && time.Now().Before(deadline) {
		t0 := time.Now()
		if err := get(); err != nil {
			return result{}, err
		}
		ds = append(ds, float64(time.Since(t0).Microseconds())/1000)
	}
	slices.Sort(ds)
	return result{P50: percentile(ds, 50), P99: percentile(ds, 99), Count: len(ds)}, nil
}

// percentile returns the p-th percentile (nearest rank) of sorted s.
func percentile(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// dialer returns a dialer through the SOCKS5 proxy pu, or direct.
func dialer(pu *url.URL) (proxy.Dialer, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if pu == nil {
		return d, nil
	}
	return proxy.FromURL(pu, d)
}

// httpExchange sends a one-shot HTTP/1.0 GET of path on c and reads the response to its end.
func httpExchange(c net.Conn, host, path string) error {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// connRate opens connections to the HTTP server at addr (host:port) from workers goroutines for
// maxDur; a connection counts once it has carried an HTTP/1.0 GET /color and its response.
func connRate(pu *url.URL, addr string, maxDur time.Duration, workers int) (result, error) {
	d, err := dialer(pu)
	if err != nil {
		return result{}, err
	}
	var ok, bad atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(maxDur)
	t0 := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				c, err := d.Dial("tcp", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(10 * time.Second))
					err = httpExchange(c, addr, "/color")
					c.Close()
				}
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	r := result{Value: float64(ok.Load()) / time.Since(t0).Seconds(), Count: int(ok.Load()), Errors: int(bad.Load())}
	if e, _ := firstErr.Load().(string); e != "" {
		r.Err = "first error: " + e
	}
	if ok.Load() == 0 {
		return r, errors.New(r.Err)
	}
	return r, nil
}

// hold opens n connections to the HTTP server at u at once, downloads u on each (HTTP/1.1, kept
// open), then keeps all of them open for holdFor before closing them.
func hold(pu *url.URL, u string, n int, holdFor time.Duration) (result, error) {
	d, err := dialer(pu)
	if err != nil {
		return result{}, err
	}
	pr, err := url.Parse(u)
	if err != nil {
		return result{}, err
	}
	conns := make([]net.Conn, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			c, err := d.Dial("tcp", pr.Host)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", pr.RequestURI(), pr.Host); err != nil {
				errs <- err
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	var first error
	bad := 0
	for range n {
		if err := <-errs; err != nil {
			bad++
			if first == nil {
				first = err
			}
		}
	}
	time.Sleep(holdFor)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	if first != nil {
		return result{Count: n - bad, Errors: bad}, fmt.Errorf("%d of %d connections failed, first: %w", bad, n, first)
	}
	return result{Count: n}, nil
}

// upload POSTs mb MiB to u and returns MB/s over the whole request.
func upload(ctx context.Context, u string, mb int) (float64, error) {
	readers := make([]io.Reader, mb)
	for i := range readers {
		readers[i] = bytes.NewReader(mib)
	}
	body := io.MultiReader(readers...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return 0, err
	}
	req.ContentLength = int64(mb) << 20
	t0 := time.Now()
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("POST %s: %s", u, resp.Status)
	}
	return float64(mb<<20) / 1e6 / time.Since(t0).Seconds(), nil
}
