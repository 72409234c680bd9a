// Package dnsclient is the stub-resolver side of DNS shared by podshim (which forwards the
// laptop's queries to the pod's nameservers) and transparent mode (which forwards the captured
// child's non-cluster queries to the laptop's own nameservers): it reads a resolv.conf(5) and
// sends one query to a list of nameservers the way a libc stub resolver does.
//
// What it leaves out: the search list and ndots are only reported by [ReadResolvConf], never
// applied ([Client.Exchange] sends the name it is given); retries of the same server, rotation,
// and the resolv.conf options other than ndots (timeout, attempts, rotate, edns0); DNS over TLS
// or HTTPS; caching; and checking answers beyond what github.com/miekg/dns does (the message ID).
// It imports only the standard library and github.com/miekg/dns, so podshim may use it.
package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout bounds one query to one nameserver over one transport when [Client.Timeout] is
// zero.
const DefaultTimeout = 2 * time.Second

// Config is what a resolv.conf says about how to resolve names.
type Config struct {
	// Servers are the nameservers in file order as "host:port" (port 53; IPv6 hosts in brackets).
	// It is empty when the file names none; glibc would then use 127.0.0.1, this package does not.
	Servers []string
	// Search is the search list ("search", or the last "domain" line) in file order, each fully
	// qualified with a trailing dot and in the file's case; the root "." is left out.
	Search []string
	// Ndots is the "options ndots:N" value (1 when absent, at most 15).
	Ndots int
}

// ReadResolvConf parses the resolv.conf(5) file at path. Lines it does not understand are
// ignored; a missing or unreadable file is an error.
func ReadResolvConf(path string) (Config, error) {
	rc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("dnsclient: reading %s: %w", path, err)
	}
	c := Config{Ndots: rc.Ndots}
	for _, s := range rc.Servers {
		c.Servers = append(c.Servers, net.JoinHostPort(s, rc.Port))
	}
	for _, d := range rc.Search {
		if d = dns.Fqdn(d); d != "." {
			c.Search = append(c.Search, d)
		}
	}
	return c, nil
}

// Client sends queries to a list of nameservers. Its Exchange method has the signature of
// proxy.Exchanger. The zero value has no servers; a Client is safe for concurrent use.
type Client struct {
	// Servers are the nameservers to ask, in order, as "host:port".
	Servers []string
	// Timeout bounds one query to one server over one transport; zero means DefaultTimeout.
	Timeout time.Duration
}

// Exchange sends m to each server in turn, over UDP and again over TCP when the UDP answer is
// truncated, and returns the first answer it gets, whatever its response code (SERVFAIL and
// REFUSED answers are returned, not retried elsewhere). A server that fails (time-out, refused,
// unreachable) is skipped. Exchange stops when ctx is done and does not modify m. The error
// lists every server's failure.
func (c *Client) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if len(c.Servers) == 0 {
		return nil, errors.New("dnsclient: no nameservers")
	}
	var errs []error
	for _, ns := range c.Servers {
		for _, network := range []string{"udp", "tcp"} {
			resp, err := c.exchangeOne(ctx, network, ns, m)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", network, ns, err))
				break
			}
			if resp.Truncated && network == "udp" {
				continue
			}
			return resp, nil
		}
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
	}
	return nil, fmt.Errorf("dnsclient: resolving %s: %w", questions(m), errors.Join(errs...))
}

func (c *Client) exchangeOne(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl := &dns.Client{Net: network, Timeout: timeout}
	conn, err := cl.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// miekg/dns honours the context's deadline only; a cancelled context unblocks the read here.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	resp, _, err := cl.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return resp, err
}

func questions(m *dns.Msg) string {
	var b strings.Builder
	for i, q := range m.Question {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q.Name)
		b.WriteByte(' ')
		b.WriteString(dns.Type(q.Qtype).String())
	}
	if b.Len() == 0 {
		return "(no question)"
	}
	return b.String()
}
