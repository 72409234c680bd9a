package podshim_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

func TestEnv(t *testing.T) {
	podEnv := []string{
		"PATH=/usr/local/bin:/usr/bin",
		"HOSTNAME=web-7c9f",
		podshim.TokenVar + "=" + testToken,
		"DB_URL=postgres://user:p@ss@db:5432/app?x=1",
		"MULTI=line1\nline2\n",
		"QUOTES=it's \"quoted\" $HOME ${X} $$ \\n",
		"UNICODE=grüße 🚀",
		"EMPTY=",
		"LEAKS_TOKEN=prefix-" + testToken + "-suffix",
		"KUBERNETES_SERVICE_HOST=10.96.0.1",
	}
	wantEnv := []string{
		"PATH=/usr/local/bin:/usr/bin",
		"HOSTNAME=web-7c9f",
		"DB_URL=postgres://user:p@ss@db:5432/app?x=1",
		"MULTI=line1\nline2\n",
		"QUOTES=it's \"quoted\" $HOME ${X} $$ \\n",
		"UNICODE=grüße 🚀",
		"EMPTY=",
		"KUBERNETES_SERVICE_HOST=10.96.0.1",
	}
	huge := []string{"BIG=" + strings.Repeat("x", tunnel.MaxFrameSize)}
	tests := []struct {
		name     string
		environ  []string
		token    string
		want     []string
		wantCode string // "" means success
	}{
		{"values round-trip without the token", podEnv, testToken, wantEnv, ""},
		{"empty environment", nil, testToken, nil, ""},
		{"wrong token", podEnv, "wrong", nil, tunnel.CodeAuth},
		{"no token", podEnv, "", nil, tunnel.CodeAuth},
		{"larger than a frame", huge, testToken, nil, tunnel.CodeError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := startServer(t, &podshim.Server{
				Token:   testToken,
				Environ: func() []string { return tt.environ },
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := newClient(addr, tt.token).Env(ctx)
			if tt.wantCode != "" {
				var de *tunnel.RemoteError
				if !errors.As(err, &de) || de.Code != tt.wantCode {
					t.Fatalf("Env = %q, %v; want code %q", got, err, tt.wantCode)
				}
				if tt.wantCode == tunnel.CodeError && !strings.Contains(de.Msg, "frame limit") {
					t.Errorf("error message %q does not explain the frame limit", de.Msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Env: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Env = %q, want %q", got, tt.want)
			}
			for _, kv := range got {
				if strings.Contains(kv, testToken) {
					t.Errorf("Env returned the session token in %q", kv)
				}
			}
		})
	}
}

func TestEnvDefaultsToProcessEnvironment(t *testing.T) {
	t.Setenv("PODSHIM_ENV_TEST", "from the process")
	t.Setenv(podshim.TokenVar, testToken)
	addr, _ := startServer(t, &podshim.Server{Token: testToken})
	got, err := newClient(addr, testToken).Env(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, "PODSHIM_ENV_TEST=from the process") {
		t.Errorf("Env = %q, want it to contain PODSHIM_ENV_TEST", got)
	}
	for _, kv := range got {
		if strings.HasPrefix(kv, podshim.TokenVar+"=") {
			t.Errorf("Env returned %q", kv)
		}
	}
}
