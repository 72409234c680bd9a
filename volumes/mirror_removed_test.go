package volumes

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSyncAfterRemove: once the copy is removed, a sync that was still scheduled must not write
// it again (it may hold secrets), and Run ends.
func TestSyncAfterRemove(t *testing.T) {
	root := filepath.Join(t.TempDir(), "copy")
	fetched := 0
	m := &Mirror{Root: root, Mounts: []string{"/etc/app"}, Fetch: func(context.Context, []string) (io.ReadCloser, error) {
		fetched++
		return io.NopCloser(strings.NewReader("")), nil
	}}
	if err := m.Remove(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"Sync", func() error { return m.Sync(context.Background()) }},
		{"Run", func() error {
			// Bounded: a Run that kept syncing would otherwise never return.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return m.Run(ctx)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrRemoved) {
				t.Fatalf("%s after Remove = %v, want ErrRemoved", tt.name, err)
			}
			if _, err := os.Stat(root); !os.IsNotExist(err) {
				t.Fatalf("the copy %s exists again after Remove (err %v)", root, err)
			}
		})
	}
	if fetched != 0 {
		t.Errorf("fetched %d times after Remove", fetched)
	}
}
