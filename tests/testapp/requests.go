package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

// requests is `testapp requests [-h2] URL SPEC...`: it sends one GET of URL per SPEC over ONE
// connection — HTTP/1.1 kept alive (written by hand, so nothing but the given headers goes out)
// or, with -h2, HTTP/2 in cleartext with prior knowledge (as gRPC does), one stream each — and
// prints each answer's body on a line of its own, in order. A SPEC is "NAME=VALUE" (a header
// the request carries) or "-" (none). The e2e tests run it in a pod with kubectl exec, so it
// needs no shell.
func requests(w io.Writer, args []string) error {
	h2 := len(args) > 0 && args[0] == "-h2"
	if h2 {
		args = args[1:]
	}
	if len(args) < 2 {
		return fmt.Errorf("usage: testapp requests [-h2] URL SPEC...")
	}
	u, err := url.Parse(args[0])
	if err != nil {
		return err
	}
	var headers []http.Header
	for _, spec := range args[1:] {
		h := http.Header{}
		if spec != "-" {
			name, value, ok := strings.Cut(spec, "=")
			if !ok {
				return fmt.Errorf("bad header %q: want NAME=VALUE or -", spec)
			}
			h.Set(name, value)
		}
		headers = append(headers, h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if h2 {
		return requestsH2(ctx, w, conn, u, headers)
	}
	br := bufio.NewReader(conn)
	for _, h := range headers {
		var req strings.Builder
		fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
		for name, vs := range h {
			fmt.Fprintf(&req, "%s: %s\r\n", name, vs[0])
		}
		req.WriteString("\r\n")
		if _, err := io.WriteString(conn, req.String()); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("reading the answer on the kept-alive connection: %w", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		fmt.Fprintln(w, strings.TrimSpace(string(body)))
	}
	return nil
}

// requestsH2 sends the requests as streams of one HTTP/2 connection over conn.
func requestsH2(ctx context.Context, w io.Writer, conn net.Conn, u *url.URL, headers []http.Header) error {
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(context.Context, string, string, *tls.Config) (net.Conn, error) {
		return nil, fmt.Errorf("one connection only")
	}}
	cc, err := tr.NewClientConn(conn)
	if err != nil {
		return err
	}
	defer cc.Close()
	for _, h := range headers {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return err
		}
		req.Header = h
		resp, err := cc.RoundTrip(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		fmt.Fprintln(w, strings.TrimSpace(string(body)))
	}
	return nil
}
