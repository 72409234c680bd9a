package intercept

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"sort"
	"strings"
)

// Header is one header equality of a Match: the request must carry a field named Name (compared
// case-insensitively) with a value equal to Value (compared exactly, byte for byte, after the
// surrounding whitespace that HTTP itself strips).
//
// The name "Host" is special: it is compared with the request's authority (the HTTP/1 Host
// header or the HTTP/2 :authority), since that is where HTTP keeps it. Other pseudo-headers
// (:path, :method) cannot be matched.
type Header struct {
	Name  string
	Value string
}

// String returns the header as NAME=VALUE, the form ParseHeader reads.
func (h Header) String() string { return h.Name + "=" + h.Value }

// ParseHeader reads one header equality written as NAME=VALUE (e.g. "x-dev=alice"), the way a
// user types it on the command line. The name must be an RFC 7230 token; the value must be
// non-empty, without control characters and without leading or trailing whitespace (HTTP strips
// it, so such a value could never match). The name is returned in canonical form (X-Dev).
//
// It does not check that the header will reach the Service: a header that a client or an ingress
// in front of it never sends, or removes (hop-by-hop headers such as Connection), never matches.
func ParseHeader(s string) (Header, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok {
		return Header{}, fmt.Errorf("header %q has no '=': write it as NAME=VALUE, e.g. x-dev=alice", s)
	}
	h := Header{Name: name, Value: value}
	if err := h.validate(); err != nil {
		return Header{}, err
	}
	h.Name = textproto.CanonicalMIMEHeaderKey(h.Name)
	return h, nil
}

// validate checks h as ParseHeader does, with errors naming the fix.
func (h Header) validate() error {
	if h.Name == "" {
		return fmt.Errorf("header %q has an empty name: write it as NAME=VALUE, e.g. x-dev=alice", h.String())
	}
	for i := 0; i < len(h.Name); i++ {
		if !isTokenChar(h.Name[i]) {
			return fmt.Errorf("header name %q contains %q, which a header name cannot contain (RFC 7230 token): use only letters, digits and !#$%%&'*+-.^_`|~", h.Name, h.Name[i])
		}
	}
	if h.Value == "" {
		return fmt.Errorf("header %q has an empty value: give the value to match, e.g. %s=alice", h.String(), h.Name)
	}
	if strings.TrimSpace(h.Value) != h.Value {
		return fmt.Errorf("header %q: the value has leading or trailing whitespace, which HTTP strips, so it could never match: remove it", h.String())
	}
	for i := 0; i < len(h.Value); i++ {
		if c := h.Value[i]; c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("header %q: the value contains the control character %q, which a header value cannot contain: remove it", h.String(), c)
		}
	}
	return nil
}

// isTokenChar reports whether c may appear in an RFC 7230 token (tchar).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Match is a set of header equalities, all of which a request must satisfy to be intercepted.
// Order and repetition do not matter. An empty Match is a header-less intercept: it takes every
// connection to the Service, HTTP or not, as raw bytes.
//
// It leaves out anything but exact equality: no prefixes, patterns, negation, query parameters or
// cookies. A header sent several times matches if any one of its field lines equals the value; a
// comma-separated list in one line is compared as a whole.
type Match []Header

// ParseMatch reads a Match from NAME=VALUE strings, as ParseHeader does for each.
func ParseMatch(specs ...string) (Match, error) {
	m := make(Match, 0, len(specs))
	for _, s := range specs {
		h, err := ParseHeader(s)
		if err != nil {
			return nil, err
		}
		m = append(m, h)
	}
	return m.normalize(), nil
}

// normalize returns m with canonical names, sorted by name then value, without duplicates.
func (m Match) normalize() Match {
	out := make(Match, 0, len(m))
	for _, h := range m {
		out = append(out, Header{Name: textproto.CanonicalMIMEHeaderKey(h.Name), Value: h.Value})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Value < out[j].Value
	})
	n := 0
	for i, h := range out {
		if i > 0 && h == out[n-1] {
			continue
		}
		out[n] = h
		n++
	}
	return out[:n]
}

// validate checks every header of m.
func (m Match) validate() error {
	var errs []error
	for _, h := range m {
		if err := h.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// String returns m as comma-separated NAME=VALUE pairs in canonical order, or "(no headers)".
func (m Match) String() string {
	if len(m) == 0 {
		return "(no headers)"
	}
	parts := make([]string, len(m))
	for i, h := range m.normalize() {
		parts[i] = h.String()
	}
	return strings.Join(parts, ",")
}

// Matches reports whether the request r satisfies every header of m. An empty Match matches
// every request. Only r.Header and r.Host are looked at.
func (m Match) Matches(r *http.Request) bool {
	return m.matches(r.Header, r.Host)
}

func (m Match) matches(hdr http.Header, host string) bool {
	for _, h := range m {
		name := textproto.CanonicalMIMEHeaderKey(h.Name)
		if name == "Host" {
			if host != h.Value {
				return false
			}
			continue
		}
		found := false
		for _, v := range hdr[name] {
			if strings.TrimSpace(v) == h.Value {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
