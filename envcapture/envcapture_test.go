package envcapture_test

import (
	"slices"
	"testing"

	"github.com/kubectl-tp/kubectl-tp/envcapture"
)

func TestFilter(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, []string{}},
		{
			name: "machine vars dropped, order kept",
			in: []string{
				"PATH=/usr/bin", "DB_URL=postgres://db:5432", "HOME=/root", "HOSTNAME=web-1",
				"TERM=xterm", "PWD=/", "SHLVL=1", "USER=root", "LOG_LEVEL=debug",
			},
			want: []string{"DB_URL=postgres://db:5432", "LOG_LEVEL=debug"},
		},
		{
			name: "session vars dropped",
			in:   []string{"TP_TOKEN=s3cret", "TP_DNS=127.0.0.1:53", "TP_=x", "A=1"},
			want: []string{"A=1"},
		},
		{
			name: "service links and look-alikes kept",
			in: []string{
				"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
				"DB_PORT=tcp://10.0.0.5:5432", "PATHS=a:b", "MY_HOME=/srv", "tp_lower=1", "XTP_Y=1",
			},
			want: []string{
				"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
				"DB_PORT=tcp://10.0.0.5:5432", "PATHS=a:b", "MY_HOME=/srv", "tp_lower=1", "XTP_Y=1",
			},
		},
		{
			name: "values with = and empty values kept, malformed entries dropped",
			in:   []string{"A=b=c", "EMPTY=", "NOEQUALS", "=novalue", "=C:=C:\\"},
			want: []string{"A=b=c", "EMPTY="},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := envcapture.Filter(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("Filter(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestIsMachineVar(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"PATH", true}, {"HOME", true}, {"HOSTNAME", true}, {"TERM", true}, {"PWD", true},
		{"SHLVL", true}, {"USER", true}, {"TP_TOKEN", true}, {"TP_POD", true},
		{"path", false}, {"PATH_X", false}, {"TP", false}, {"KUBERNETES_SERVICE_HOST", false}, {"", false},
	}
	for _, tt := range tests {
		if got := envcapture.IsMachineVar(tt.name); got != tt.want {
			t.Errorf("IsMachineVar(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name            string
		local, captured []string
		want            []string
	}{
		{"both empty", nil, nil, []string{}},
		{"local only", []string{"PATH=/bin", "A=1"}, nil, []string{"PATH=/bin", "A=1"}},
		{"captured only", nil, []string{"A=1", "B=2"}, []string{"A=1", "B=2"}},
		{
			name:     "captured overrides in place, new ones appended in captured order",
			local:    []string{"PATH=/bin", "DB_URL=localhost", "EDITOR=vi"},
			captured: []string{"Z_NEW=z", "DB_URL=postgres://db", "A_NEW=a"},
			want:     []string{"PATH=/bin", "DB_URL=postgres://db", "EDITOR=vi", "Z_NEW=z", "A_NEW=a"},
		},
		{
			name:     "machine vars always local",
			local:    []string{"PATH=/usr/local/bin", "HOME=/home/me", "TP_DNS=127.0.0.1:5353"},
			captured: []string{"PATH=/usr/bin", "HOME=/root", "HOSTNAME=pod-1", "TP_TOKEN=s3cret", "TP_DNS=x", "APP=1"},
			want:     []string{"PATH=/usr/local/bin", "HOME=/home/me", "TP_DNS=127.0.0.1:5353", "APP=1"},
		},
		{
			name:     "empty captured value overrides",
			local:    []string{"A=local"},
			captured: []string{"A="},
			want:     []string{"A="},
		},
		{
			name:     "duplicates collapse to the last value at the first position",
			local:    []string{"A=1", "B=1", "A=2"},
			captured: []string{"C=1", "C=2", "B=3"},
			want:     []string{"A=2", "B=3", "C=2"},
		},
		{
			name:     "malformed entries dropped",
			local:    []string{"NOEQ", "=x", "A=1"},
			captured: []string{"ALSO", "B=2"},
			want:     []string{"A=1", "B=2"},
		},
		{
			name:     "names are case-sensitive",
			local:    []string{"Path=/local", "db=1"},
			captured: []string{"DB=2"},
			want:     []string{"Path=/local", "db=1", "DB=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := envcapture.Merge(tt.local, tt.captured)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Merge(%q, %q) = %q, want %q", tt.local, tt.captured, got, tt.want)
			}
			if again := envcapture.Merge(tt.local, tt.captured); !slices.Equal(again, got) {
				t.Errorf("Merge is not deterministic: %q then %q", got, again)
			}
		})
	}
}
