package intercept_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
)

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    intercept.Header
		wantErr string // substring of the error; "" means success
	}{
		{in: "x-dev=alice", want: intercept.Header{Name: "X-Dev", Value: "alice"}},
		{in: "X-DEV=Alice", want: intercept.Header{Name: "X-Dev", Value: "Alice"}},
		{in: "x-dev=a=b", want: intercept.Header{Name: "X-Dev", Value: "a=b"}},
		{in: "x-dev=alice smith", want: intercept.Header{Name: "X-Dev", Value: "alice smith"}},
		{in: "host=api.example:8080", want: intercept.Header{Name: "Host", Value: "api.example:8080"}},
		{in: "x_dev!#=1", want: intercept.Header{Name: "X_dev!#", Value: "1"}},
		{in: "x-dev", wantErr: "has no '=': write it as NAME=VALUE"},
		{in: "", wantErr: "has no '='"},
		{in: "=alice", wantErr: "empty name"},
		{in: "x dev=alice", wantErr: "cannot contain (RFC 7230 token)"},
		{in: "x-dev:=alice", wantErr: `contains ':'`},
		{in: ":authority=x", wantErr: "RFC 7230 token"},
		{in: "x-dév=alice", wantErr: "RFC 7230 token"},
		{in: "x-dev=", wantErr: "empty value"},
		{in: "x-dev= alice", wantErr: "whitespace"},
		{in: "x-dev=alice\r\nx: y", wantErr: "control character"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := intercept.ParseHeader(tc.in)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %+v, %v; want one-line error containing %q", got, err, tc.wantErr)
			}
		})
	}
}

func nopDialer() intercept.Dialer {
	return intercept.DialerFunc(func(context.Context) (net.Conn, error) { return nil, net.ErrClosed })
}

// TestTableAdd: clashes are refused with the owner and start of the intercept in the way;
// everything else is accepted.
func TestTableAdd(t *testing.T) {
	start := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	type reg struct {
		id, owner string
		headers   []string
	}
	for _, tc := range []struct {
		name     string
		existing []reg
		add      reg
		nilDial  bool
		wantErr  []string // substrings; nil means accepted
	}{
		{"different headers", []reg{{"a", "alice", []string{"x-dev=alice"}}}, reg{"b", "bob", []string{"x-dev=bob"}}, false, nil},
		{"superset", []reg{{"a", "alice", []string{"x-dev=alice"}}}, reg{"b", "bob", []string{"x-dev=alice", "x-v=2"}}, false, nil},
		{"same headers", []reg{{"a", "alice@laptop", []string{"x-dev=alice"}}}, reg{"b", "bob", []string{"x-dev=alice"}}, false,
			[]string{"X-Dev=alice", "alice@laptop", "2025-03-04T05:06:07Z", "choose other headers"}},
		{"same set, other order and case", []reg{{"a", "alice", []string{"x-dev=alice", "x-team=a"}}}, reg{"b", "bob", []string{"X-TEAM=a", "x-dev=alice", "x-dev=alice"}}, false,
			[]string{"alice", "2025-03-04T05:06:07Z"}},
		{"header-less while others", []reg{{"a", "alice", []string{"x-dev=alice"}}}, reg{"c", "carol", nil}, false,
			[]string{"without headers takes every request", "alice", "X-Dev=alice", "2025-03-04T05:06:07Z"}},
		{"headers while header-less", []reg{{"c", "carol", nil}}, reg{"a", "alice", []string{"x-dev=alice"}}, false,
			[]string{"carol", "without headers", "2025-03-04T05:06:07Z", "no other intercept can share"}},
		{"two header-less", []reg{{"c", "carol", nil}}, reg{"d", "dave", nil}, false, []string{"carol"}},
		{"same ID", []reg{{"a", "alice", []string{"x-dev=alice"}}}, reg{"a", "alice", []string{"x-dev=other"}}, false, []string{`"a" is already registered`}},
		{"empty ID", nil, reg{"", "alice", []string{"x-dev=alice"}}, false, []string{"empty ID"}},
		{"no dialer", nil, reg{"a", "alice", []string{"x-dev=alice"}}, true, []string{"no Dialer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := &intercept.Table{}
			for _, r := range tc.existing {
				m, _ := intercept.ParseMatch(r.headers...)
				if err := tab.Add(intercept.Intercept{ID: r.id, Owner: r.owner, Started: start, Match: m, Dialer: nopDialer()}); err != nil {
					t.Fatal(err)
				}
			}
			before := tab.List()
			m, err := intercept.ParseMatch(tc.add.headers...)
			if err != nil {
				t.Fatal(err)
			}
			ic := intercept.Intercept{ID: tc.add.id, Owner: tc.add.owner, Started: start.Add(time.Hour), Match: m, Dialer: nopDialer()}
			if tc.nilDial {
				ic.Dialer = nil
			}
			err = tab.Add(ic)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if n := len(tab.List()); n != len(before)+1 {
					t.Fatalf("List has %d entries after Add", n)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted, want refused")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if len(tab.List()) != len(before) {
				t.Errorf("refused Add changed the table")
			}
		})
	}
}

// TestTableChoose: more headers win over fewer; among equally specific matches the earlier
// registration wins; Host matches the authority.
func TestTableChoose(t *testing.T) {
	tab := &intercept.Table{}
	add(t, tab, "a", "alice", nopDialer(), "x-dev=alice")
	add(t, tab, "b", "bob", nopDialer(), "x-dev=alice", "x-v=2")
	add(t, tab, "t", "team", nopDialer(), "x-team=a")
	add(t, tab, "h", "host", nopDialer(), "host=api.example")
	for _, tc := range []struct {
		name   string
		header http.Header
		host   string
		want   string
	}{
		{"one header", http.Header{"X-Dev": {"alice"}}, "svc", "a"},
		{"more specific wins though later", http.Header{"X-Dev": {"alice"}, "X-V": {"2"}}, "svc", "b"},
		{"equal specificity: earlier wins", http.Header{"X-Dev": {"alice"}, "X-Team": {"a"}}, "svc", "a"},
		{"host", nil, "api.example", "h"},
		{"host is exact", nil, "api.example:80", ""},
		{"nothing", http.Header{"X-Dev": {"bob"}}, "svc", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ic, ok := tab.Choose(&http.Request{Header: tc.header, Host: tc.host})
			if ic.ID != tc.want || ok != (tc.want != "") {
				t.Fatalf("chose %q (%v), want %q", ic.ID, ok, tc.want)
			}
		})
	}
	var order []string
	for _, ic := range tab.List() {
		order = append(order, ic.ID)
	}
	if strings.Join(order, ",") != "b,a,t,h" {
		t.Errorf("List order %v, want b,a,t,h", order)
	}
	tab.Remove("b")
	if ic, _ := tab.Choose(&http.Request{Header: http.Header{"X-Dev": {"alice"}, "X-V": {"2"}}}); ic.ID != "a" {
		t.Errorf("after Remove(b): chose %q, want a", ic.ID)
	}
}
