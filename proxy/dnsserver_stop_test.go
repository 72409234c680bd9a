package proxy

import (
	"context"
	"net"
	"testing"
)

// TestDNSServeForgetsEndedCalls: each Serve that returns drops its stop function, so a long-lived
// DNS server restarted many times does not grow.
func TestDNSServeForgetsEndedCalls(t *testing.T) {
	d := &DNS{}
	for range 3 {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Serve(ctx, udp, nil) }()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	n := len(d.stop)
	d.mu.Unlock()
	if n != 0 {
		t.Errorf("%d stop functions kept after every Serve returned; want 0", n)
	}
}
