package session

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestTransparentEnv(t *testing.T) {
	e := Endpoints{SOCKS: "127.0.0.1:1", HTTP: "127.0.0.1:2", DNS: "127.0.0.1:3", Username: "u", Password: "p", Namespace: "ns", Pod: "tp-x"}
	ranges := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	cases := []struct {
		name        string
		base        []string
		want, unset []string
	}{
		{
			name:  "no proxy variables, only the session's",
			base:  []string{"PATH=/bin", "TP_DNS=stale"},
			want:  []string{"PATH=/bin", "TP_DNS=127.0.0.1:3", "TP_NAMESPACE=ns", "TP_POD=tp-x"},
			unset: []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "JAVA_TOOL_OPTIONS", "TP_SOCKS"},
		},
		{
			name: "the user's own proxy is kept and skips the cluster",
			base: []string{"HTTPS_PROXY=http://corp:3128", "NO_PROXY=.corp"},
			want: []string{"HTTPS_PROXY=http://corp:3128",
				"NO_PROXY=.corp,.svc,.cluster.local,198.19.0.0/16,10.96.0.0/16",
				"no_proxy=.svc,.cluster.local,198.19.0.0/16,10.96.0.0/16"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := TransparentEnv(tc.base, e, ranges)
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing %q in %q", w, got)
				}
			}
			for _, k := range tc.unset {
				for _, kv := range got {
					if strings.HasPrefix(kv, k+"=") {
						t.Errorf("%s is set: %q", k, kv)
					}
				}
			}
			for _, kv := range got {
				if strings.Contains(kv, "u:p@") {
					t.Errorf("proxy credentials leaked into %q", kv)
				}
			}
		})
	}
}
