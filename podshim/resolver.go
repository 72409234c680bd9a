package podshim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/kubectl-tp/kubectl-tp/internal/dnsclient"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

const (
	// upstreamTimeout bounds one query to one nameserver.
	upstreamTimeout = 2 * time.Second
	// queryTimeout bounds the resolution of one client query.
	queryTimeout = 8 * time.Second
	// maxInflight bounds concurrently resolved queries per DNS stream.
	maxInflight = 64
)

// resolver is the DNS configuration used by one DNS stream.
type resolver struct {
	client *dnsclient.Client
	search []string // fully qualified, with trailing dot
	ndots  int
}

func readResolvConf(path string) (*dns.ClientConfig, error) {
	rc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("podshim: reading %s: %w", path, err)
	}
	return rc, nil
}

func (s *Server) resolver() (*resolver, error) {
	r := &resolver{ndots: 1, client: &dnsclient.Client{Timeout: upstreamTimeout}}
	rc, err := dnsclient.ReadResolvConf(s.resolvConf())
	if err != nil {
		if len(s.Nameservers) == 0 {
			return nil, fmt.Errorf("podshim: %w", err)
		}
	} else {
		r.ndots, r.search, r.client.Servers = rc.Ndots, rc.Search, rc.Servers
	}
	if len(s.Nameservers) > 0 {
		r.client.Servers = nil
		for _, ns := range s.Nameservers {
			if _, _, err := net.SplitHostPort(ns); err != nil {
				ns = net.JoinHostPort(ns, "53")
			}
			r.client.Servers = append(r.client.Servers, ns)
		}
	}
	if len(r.client.Servers) == 0 {
		return nil, errors.New("podshim: no nameservers configured")
	}
	return r, nil
}

// serveDNS answers DNS queries in TCP framing until the stream ends.
func (s *Server) serveDNS(ctx context.Context, c net.Conn) {
	r, err := s.resolver()
	if err != nil {
		s.reply(c, fail(tunnel.CodeError, err.Error()))
		return
	}
	if !s.reply(c, &tunnel.Response{OK: true}) {
		return
	}
	var (
		wmu sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, maxInflight)
	)
	defer wg.Wait()
	for {
		q, err := tunnel.ReadDNSMsg(c)
		if err != nil {
			var ue *tunnel.DNSUnpackError
			if errors.As(err, &ue) {
				s.logf("%v: %v", c.RemoteAddr(), err)
				// Answer FORMERR at once: the asker is waiting for this ID.
				if len(ue.Raw) >= 2 {
					formErr := new(dns.Msg)
					formErr.Id = binary.BigEndian.Uint16(ue.Raw)
					formErr.Response, formErr.Rcode = true, dns.RcodeFormatError
					wmu.Lock()
					_ = c.SetWriteDeadline(time.Now().Add(requestTimeout))
					werr := tunnel.WriteDNSMsg(c, formErr)
					wmu.Unlock()
					if werr != nil {
						c.Close()
						return
					}
				}
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.logf("%v: dns stream: %v", c.RemoteAddr(), err)
			}
			return
		}
		s.heard()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			qctx, cancel := context.WithTimeout(ctx, queryTimeout)
			resp := r.resolve(qctx, q)
			cancel()
			wmu.Lock()
			_ = c.SetWriteDeadline(time.Now().Add(requestTimeout))
			err := tunnel.WriteDNSMsg(c, resp)
			wmu.Unlock()
			if err != nil {
				s.logf("%v: %v", c.RemoteAddr(), err)
				c.Close()
			}
		}()
	}
}

// candidates lists the names to try for name, in order, the way a libc resolver
// applies the search list: names with fewer than ndots dots are tried with each
// search suffix first, then as given; other names only as given.
func (r *resolver) candidates(name string) []string {
	name = dns.Fqdn(name)
	if name == "." || strings.Count(strings.TrimSuffix(name, "."), ".") >= r.ndots {
		return []string{name}
	}
	out := make([]string, 0, len(r.search)+1)
	for _, d := range r.search {
		out = append(out, name+d)
	}
	return append(out, name)
}

// resolve answers q; it never returns nil (failures become SERVFAIL).
func (r *resolver) resolve(ctx context.Context, q *dns.Msg) *dns.Msg {
	if len(q.Question) != 1 {
		resp, err := r.exchange(ctx, q)
		if err != nil {
			return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
		}
		return resp
	}
	orig := q.Question[0].Name
	var last *dns.Msg
	for _, name := range r.candidates(orig) {
		qq := q.Copy()
		qq.Question[0].Name = name
		resp, err := r.exchange(ctx, qq)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		last = resp
		if resp.Rcode == dns.RcodeSuccess && len(resp.Answer) > 0 {
			break
		}
	}
	if last == nil {
		return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
	}
	rewriteOwner(last, orig)
	last.Id = q.Id
	return last
}

// rewriteOwner renames the question and the records owned by the name that was
// actually asked so that resp answers orig.
func rewriteOwner(resp *dns.Msg, orig string) {
	if len(resp.Question) == 0 {
		return
	}
	asked := resp.Question[0].Name
	if asked == orig {
		return
	}
	resp.Question[0].Name = orig
	for _, rr := range resp.Answer {
		if h := rr.Header(); strings.EqualFold(h.Name, asked) {
			h.Name = orig
		}
	}
}

// exchange sends q to the pod's nameservers (see dnsclient.Client.Exchange).
func (r *resolver) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	return r.client.Exchange(ctx, q)
}
