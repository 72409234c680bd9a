// Command tpclient is the child process of kubectl-tp's e2e tests: small, scriptable checks of what
// a program run by `kubectl tp run` can reach. It only reads the variables kubectl tp sets.
//
//	tpclient get URL            GET with Go's net/http (HTTP_PROXY/HTTPS_PROXY from the environment)
//	tpclient echo HOST:PORT MSG dial through ALL_PROXY (SOCKS5), send MSG, half-close, print the echo
//	tpclient dns NAME TYPE      ask the DNS server at TP_DNS, print the answers one per line
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/proxy"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: tpclient get URL | echo HOST:PORT MSG | dns NAME TYPE")
	}
	var err error
	switch os.Args[1] {
	case "get":
		err = get(os.Args[2])
	case "echo":
		err = echo(os.Args[2], strings.Join(os.Args[3:], " "))
	case "dns":
		typ := "A"
		if len(os.Args) > 3 {
			typ = os.Args[3]
		}
		err = lookup(os.Args[2], typ)
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "tpclient:", msg)
	os.Exit(2)
}

func get(u string) error {
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

func echo(addr, msg string) error {
	u, err := url.Parse(os.Getenv("ALL_PROXY"))
	if err != nil || u.Host == "" {
		return fmt.Errorf("ALL_PROXY is not a proxy URL: %q", os.Getenv("ALL_PROXY"))
	}
	var auth *proxy.Auth
	if u.User != nil {
		p, _ := u.User.Password()
		auth = &proxy.Auth{User: u.User.Username(), Password: p}
	}
	d, err := proxy.SOCKS5("tcp", u.Host, auth, proxy.Direct)
	if err != nil {
		return err
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

func lookup(name, typ string) error {
	server := os.Getenv("TP_DNS")
	if server == "" {
		return fmt.Errorf("TP_DNS is not set")
	}
	t, ok := dns.StringToType[strings.ToUpper(typ)]
	if !ok {
		return fmt.Errorf("unknown record type %q", typ)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 5 * time.Second}
		r, _, err := c.Exchange(m, server)
		if err != nil {
			return fmt.Errorf("%s query: %w", proto, err)
		}
		if r.Rcode != dns.RcodeSuccess {
			return fmt.Errorf("%s query for %s %s: %s", proto, name, typ, dns.RcodeToString[r.Rcode])
		}
		if proto == "tcp" {
			for _, rr := range r.Answer {
				fmt.Println(rr.String())
			}
		}
	}
	return nil
}
