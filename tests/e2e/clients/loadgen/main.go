// Command loadgen loads a kubectl-tp session in proxy-variable mode, for the e2e leak test:
//
//	loadgen socks N HOST:PORT      N SOCKS5 connections (ALL_PROXY) open at once to a TCP echo
//	                               server, each then echoing one line
//	loadgen http N C URL           N GET requests through the HTTP proxy (HTTP_PROXY), C at a time,
//	                               on kept-alive connections
//
// It prints one line "RESULT MODE ok=N errors=N" and, for the first failures, "ERR …" lines.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/proxy"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: loadgen socks N HOST:PORT | http N C URL")
		os.Exit(2)
	}
	n, _ := strconv.Atoi(os.Args[2])
	var ok, bad atomic.Int64
	var shown atomic.Int64
	fail := func(err error) {
		bad.Add(1)
		if shown.Add(1) <= 5 {
			fmt.Printf("ERR %v\n", err)
		}
	}
	switch os.Args[1] {
	case "socks":
		socks(n, os.Args[3], &ok, fail)
	case "http":
		c, _ := strconv.Atoi(os.Args[3])
		if len(os.Args) != 5 || c < 1 {
			fmt.Fprintln(os.Stderr, "usage: loadgen http N C URL")
			os.Exit(2)
		}
		httpLoad(n, c, os.Args[4], &ok, fail)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
	fmt.Printf("RESULT %s ok=%d errors=%d\n", os.Args[1], ok.Load(), bad.Load())
}

func socks(n int, target string, ok *atomic.Int64, fail func(error)) {
	u, err := url.Parse(os.Getenv("ALL_PROXY"))
	if err != nil || u.Host == "" {
		fail(fmt.Errorf("ALL_PROXY is not a proxy URL: %q", os.Getenv("ALL_PROXY")))
		return
	}
	var auth *proxy.Auth
	if u.User != nil {
		pw, _ := u.User.Password()
		auth = &proxy.Auth{User: u.User.Username(), Password: pw}
	}
	d, err := proxy.SOCKS5("tcp", u.Host, auth, &net.Dialer{Timeout: time.Minute})
	if err != nil {
		fail(err)
		return
	}
	// Every connection is open before any echoes: n at once.
	var opened, wg sync.WaitGroup
	opened.Add(n)
	release := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial("tcp", target)
			opened.Done()
			if err != nil {
				fail(err)
				return
			}
			defer c.Close()
			<-release
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			msg := fmt.Sprintf("line-%d\n", i)
			if _, err := io.WriteString(c, msg); err != nil {
				fail(err)
				return
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != msg {
				fail(fmt.Errorf("echo %q: got %q, %v", msg, got, err))
				return
			}
			ok.Add(1)
		}()
	}
	opened.Wait()
	close(release)
	wg.Wait()
}

func httpLoad(n, c int, target string, ok *atomic.Int64, fail func(error)) {
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: c}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				resp, err := client.Get(target)
				if err != nil {
					fail(err)
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("GET %s: %s %v", target, resp.Status, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
}
