package forward

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// TestResetDoesNotWaitForADial: Reset, Retarget and Close return while an Open is still dialling
// (the API server not answering), and the connection that dial may still bring is not kept.
func TestResetDoesNotWaitForADial(t *testing.T) {
	tests := []struct {
		name string
		call func(f *Forwarder)
	}{
		{"Reset", (*Forwarder).Reset},
		{"Retarget", func(f *Forwarder) { f.Retarget("other") }},
		{"Close", func(f *Forwarder) { _ = f.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entered, release := make(chan struct{}, 8), make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-release
				http.Error(w, "no", http.StatusServiceUnavailable)
			}))
			defer srv.Close()
			defer close(release)
			f := &Forwarder{Config: &rest.Config{Host: srv.URL}, Namespace: "ns", Pod: "p", Port: 1, DialTimeout: time.Minute}
			opened := make(chan error, 1)
			go func() { _, err := f.Open(context.Background()); opened <- err }()
			<-entered
			done := make(chan struct{})
			go func() { tt.call(f); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s waited for the dial", tt.name)
			}
		})
	}
}
