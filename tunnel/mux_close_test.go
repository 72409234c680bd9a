package tunnel

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestMuxCloseDoesNotWaitForADial: Close returns while Open is still waiting for its carrier (a
// port-forward dial can take up to 15 s), and that Open then fails as closed.
func TestMuxCloseDoesNotWaitForADial(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	m := &Mux{Token: "t", Carrier: func(ctx context.Context) (net.Conn, error) {
		close(entered)
		<-release
		a, b := net.Pipe()
		b.Close()
		return a, nil
	}}
	opened := make(chan error, 1)
	go func() { _, err := m.Open(context.Background()); opened <- err }()
	<-entered
	closed := make(chan struct{})
	go func() { _ = m.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the carrier's dial")
	}
	close(release)
	if err := <-opened; err == nil {
		t.Fatal("Open succeeded on a closed Mux")
	}
	if _, err := m.Open(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Open after Close = %v, want net.ErrClosed", err)
	}
}
