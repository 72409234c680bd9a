package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// fetchTimeout bounds a /fetch request to another address.
	fetchTimeout = 10 * time.Second
	// maxMiB caps /bytes so a typo cannot stream for hours.
	maxMiB = 64 << 10
)

// mib is the reusable buffer /bytes writes from: pseudo-random bytes (a fixed ChaCha8 seed), so
// that no compression on the path can flatter a throughput measurement.
var mib = func() []byte {
	b := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{'k', 't', 'p'}).Read(b)
	return b
}()

// app holds what the HTTP handlers serve.
type app struct {
	hostname string
	color    string
	caPEM    []byte
	// probe, when set, is served at GET /probe.
	probe *prober
}

// handler returns the endpoints served on the plain and TLS ports.
func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "testapp %s\n", a.hostname)
	})
	mux.HandleFunc("GET /env", handleEnv)
	mux.HandleFunc("GET /file", handleFile)
	mux.HandleFunc("GET /bytes", handleBytes)
	mux.HandleFunc("GET /fetch", handleFetch)
	mux.HandleFunc("GET /color", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, a.color+"\n")
	})
	mux.HandleFunc("GET /peer", handlePeer)
	mux.HandleFunc("GET /healthz", handleHealthz)
	if a.probe != nil {
		mux.Handle("GET /probe", a.probe)
	}
	mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(a.caPEM)
	})
	return mux
}

// healthHandler returns the health port's handler: GET /healthz only.
func healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", handleHealthz)
	return mux
}

// handleHealthz answers "ok".
func handleHealthz(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "ok")
}

// handlePeer answers the address the request came from, without its port: the e2e tests tell a
// request carried by kubectl-tp's proxy pod from one the node sent directly.
func handlePeer(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	io.WriteString(w, host+"\n")
}

// handleEnv serves the process environment as a JSON object.
func handleEnv(w http.ResponseWriter, r *http.Request) {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(env)
}

// handleFile serves the file named by the path query parameter.
func handleFile(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if p == "" {
		http.Error(w, "missing path parameter", http.StatusBadRequest)
		return
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if !st.Mode().IsRegular() {
		http.Error(w, p+" is not a regular file", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	io.Copy(w, f)
}

// handleBytes serves mb MiB of filler data.
func handleBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("mb"))
	if err != nil || n < 0 || n > maxMiB {
		http.Error(w, fmt.Sprintf("mb must be an integer from 0 to %d", maxMiB), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(int64(n)<<20, 10))
	for range n {
		if _, err := w.Write(mib); err != nil {
			return
		}
	}
}

// fetchClient is the client /fetch uses. It opens a new connection for every fetch, so that each one is routed afresh by the
// cluster (a kept-alive connection would stay with a pod that a test has since replaced).
var fetchClient = &http.Client{Timeout: fetchTimeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// handleFetch fetches the url query parameter and relays its status and body.
func handleFetch(w http.ResponseWriter, r *http.Request) {
	u := r.URL.Query().Get("url")
	if u == "" {
		http.Error(w, "missing url parameter", http.StatusBadRequest)
		return
	}
	resp, err := fetchClient.Get(u)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// get writes the body of url to w (a fresh connection, no proxy); a non-2xx status is an error.
func get(w io.Writer, url string) error {
	resp, err := fetchClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
