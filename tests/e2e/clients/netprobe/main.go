// Command netprobe is a client for kubectl-tp's transparent-mode e2e tests, built static
// (CGO_ENABLED=0) so that it resolves names with Go's own DNS client and dials with plain system
// calls: no libc, no proxy variables. Every result is one line "RESULT go TARGET VALUE", VALUE
// starting with "ERR" when the step failed.
//
//	netprobe peer HOST:PORT...     net.LookupHost, then net.Dial and GET /peer over HTTP/1.0
//	netprobe many N HOST:PORT      N connections open at once, then GET /peer on each
//	netprobe srv SERVICE PROTO NAME net.LookupSRV
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const timeout = 60 * time.Second

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: netprobe peer HOST:PORT... | many N HOST:PORT | srv SERVICE PROTO NAME")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "peer":
		for _, hp := range os.Args[2:] {
			peer(hp)
		}
	case "many":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil || len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: netprobe many N HOST:PORT")
			os.Exit(2)
		}
		many(n, os.Args[3])
	case "srv":
		if len(os.Args) != 5 {
			fmt.Fprintln(os.Stderr, "usage: netprobe srv SERVICE PROTO NAME")
			os.Exit(2)
		}
		srv(os.Args[2], os.Args[3], os.Args[4])
	default:
		fmt.Fprintf(os.Stderr, "netprobe: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
}

func report(target, value string) {
	fmt.Printf("RESULT go %s %s\n", target, value)
}

func errValue(err error) string {
	return "ERR " + strings.ReplaceAll(err.Error(), "\n", " ")
}

// peer reports HOST's addresses (target "lookup:HOST") and what GET /peer answers (target HOST).
func peer(hostPort string) {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		report(hostPort, errValue(err))
		return
	}
	if addrs, err := net.LookupHost(host); err != nil {
		report("lookup:"+host, errValue(err))
	} else {
		report("lookup:"+host, strings.Join(addrs, ","))
	}
	c, err := net.DialTimeout("tcp", hostPort, timeout)
	if err != nil {
		report(host, errValue(err))
		return
	}
	defer c.Close()
	body, err := getPeer(c, host)
	if err != nil {
		report(host, errValue(err))
		return
	}
	report(host, body)
}

// many opens n connections to hostPort at once, then asks each for /peer. It reports "OK/N
// PEERS" (target "many"), PEERS being the distinct answers, comma-separated, and the first
// error if any.
func many(n int, hostPort string) {
	host, _, _ := net.SplitHostPort(hostPort)
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var dialled sync.WaitGroup
	for i := range n {
		dialled.Add(1)
		go func() {
			defer dialled.Done()
			conns[i], errs[i] = net.DialTimeout("tcp", hostPort, timeout)
		}()
	}
	dialled.Wait() // every connection is open (or failed) before any request
	answers := make([]string, n)
	var asked sync.WaitGroup
	for i, c := range conns {
		if c == nil {
			continue
		}
		asked.Add(1)
		go func() {
			defer asked.Done()
			defer c.Close()
			answers[i], errs[i] = getPeer(c, host)
		}()
	}
	asked.Wait()
	ok := 0
	var peers []string
	var first error
	for i := range n {
		if errs[i] != nil {
			if first == nil {
				first = errs[i]
			}
			continue
		}
		ok++
		if !slices.Contains(peers, answers[i]) {
			peers = append(peers, answers[i])
		}
	}
	slices.Sort(peers)
	v := fmt.Sprintf("%d/%d %s", ok, n, strings.Join(peers, ","))
	if first != nil {
		v += " first error: " + errValue(first)
	}
	report("many", v)
}

// srv reports the SRV records of _SERVICE._PROTO.NAME as "PRIORITY WEIGHT PORT TARGET", ";"-separated.
func srv(service, proto, name string) {
	_, recs, err := net.LookupSRV(service, proto, name)
	if err != nil {
		report("srv", errValue(err))
		return
	}
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("%d %d %d %s", r.Priority, r.Weight, r.Port, r.Target))
	}
	report("srv", strings.Join(out, ";"))
}

// getPeer sends GET /peer over c as HTTP/1.0 and returns the body of a 200 answer, trimmed.
func getPeer(c net.Conn, host string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET /peer HTTP/1.0\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		return "", err
	}
	head, body, found := strings.Cut(string(b), "\r\n\r\n")
	status, _, _ := strings.Cut(head, "\r\n")
	if !found || !strings.Contains(status, " 200 ") {
		return "", fmt.Errorf("answer %q", string(b))
	}
	return strings.TrimSpace(body), nil
}
