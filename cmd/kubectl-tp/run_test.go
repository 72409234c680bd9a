package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/session"
)

func TestRunValidate(t *testing.T) {
	base := func() *RunOptions {
		return &RunOptions{Command: []string{"true"}, IdleTimeout: 30 * time.Second, EnvSyntax: "docker", MaxVolumeSize: "10Mi"}
	}
	cases := []struct {
		name    string
		mod     func(o *RunOptions)
		errPart string
	}{
		{"ok", func(o *RunOptions) {}, ""},
		{"no command", func(o *RunOptions) { o.Command = nil }, "no command given"},
		{"command not found", func(o *RunOptions) { o.Command = []string{"no-such-cmd-tp"} }, "command not found: no-such-cmd-tp"},
		{"idle timeout too short", func(o *RunOptions) { o.IdleTimeout = time.Second }, "--idle-timeout 1s is too short"},
		{"bad expose", func(o *RunOptions) { o.Expose = []string{"http"} }, `--expose "http": want LOCAL[:REMOTE]`},
		{"expose out of range", func(o *RunOptions) { o.Expose = []string{"3000:70000"} }, "ports 1-65535"},
		{"from and swap", func(o *RunOptions) { o.From = "api"; o.SwapDeployment = "api" }, "use one of them"},
		{"swap with a type", func(o *RunOptions) { o.SwapDeployment = "statefulset/db" }, "takes a Deployment NAME[:CONTAINER]"},
		{"bad from type", func(o *RunOptions) { o.From = "job/x" }, `workload type "job" is not supported`},
		{"env file without a workload", func(o *RunOptions) { o.EnvFile = "x.env" }, "add --from TYPE/NAME"},
		{"bad env syntax", func(o *RunOptions) { o.From = "api"; o.EnvSyntax = "toml" }, "--env-syntax"},
		{"bad volume size", func(o *RunOptions) { o.MaxVolumeSize = "lots" }, `--max-volume-size "lots" is not a size`},
		{"volume size too large", func(o *RunOptions) { o.MaxVolumeSize = "1Gi" }, "above the 64Mi"},
		{"also-proxy CIDR", func(o *RunOptions) { o.transparent = session.TransparentAuto; o.AlsoProxy = []string{"10.20.0.0/16"} }, ""},
		{"also-proxy address", func(o *RunOptions) {
			o.transparent = session.TransparentAuto
			o.AlsoProxy = []string{"10.20.0.5", "fd00::1"}
		}, ""},
		{"also-proxy not a range", func(o *RunOptions) { o.transparent = session.TransparentAuto; o.AlsoProxy = []string{"db.internal"} }, `--also-proxy "db.internal" is not a range`},
		{"also-proxy without transparent mode", func(o *RunOptions) { o.AlsoProxy = []string{"10.20.0.0/16"} }, "--also-proxy works in transparent mode only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.mod(o)
			err := o.Validate()
			if tc.errPart == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.errPart)
			}
		})
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.20.3.4/16", "10.20.0.0/16"},
		{"10.20.0.5", "10.20.0.5/32"},
		{"fd00::1", "fd00::1/128"},
		{"fd00:1::/48", "fd00:1::/48"},
	} {
		got, err := parseRange(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("parseRange(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
