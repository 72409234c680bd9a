package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// prober requests one URL at a fixed rate, each request on a new connection (so every request is
// routed by the Service afresh), and counts the answers: the in-cluster client of the swap-window
// test. A request that takes longer than probeTimeout counts as failed.
type prober struct {
	url   string
	every time.Duration

	mu     sync.Mutex
	ok     int
	bodies map[string]int
	failed []string // "RFC3339Nano error", one per failed request
}

// probeTimeout bounds one probe request.
const probeTimeout = 2 * time.Second

// probeStats is what GET /probe returns.
type probeStats struct {
	OK     int            `json:"ok"`
	Bodies map[string]int `json:"bodies"`
	Failed []string       `json:"failed"`
}

func newProber(url string, every time.Duration) *prober {
	return &prober{url: url, every: every, bodies: map[string]int{}}
}

// run starts a request every p.every until ctx ends; requests overlap when one is slow.
func (p *prober) run(ctx context.Context) {
	client := &http.Client{Timeout: probeTimeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			go p.once(ctx, client)
		}
	}
}

func (p *prober) once(ctx context.Context, client *http.Client) {
	at := time.Now()
	body, err := func() (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		return strings.TrimSpace(string(b)), nil
	}()
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.failed = append(p.failed, at.UTC().Format(time.RFC3339Nano)+" "+err.Error())
		return
	}
	p.ok++
	p.bodies[body]++
}

// ServeHTTP answers GET /probe with the counts so far; ?reset=1 also starts them afresh.
func (p *prober) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	st := probeStats{OK: p.ok, Bodies: p.bodies, Failed: p.failed}
	if r.URL.Query().Get("reset") != "" {
		p.ok, p.bodies, p.failed = 0, map[string]int{}, nil
	}
	p.mu.Unlock()
	if st.Failed == nil {
		st.Failed = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}
