package session

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var createOptions = metav1.CreateOptions{FieldManager: "kubectl-tp"}

// progress reports start-up steps on stderr: a spinner on one line when stderr is a terminal,
// one plain line per new step otherwise, nothing when quiet.
type progress struct {
	w     io.Writer
	quiet bool
	tty   bool

	mu      sync.Mutex
	last    string
	done    chan struct{}
	stopped bool
}

func newProgress(w io.Writer, quiet bool) *progress {
	p := &progress{w: w, quiet: quiet, done: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if !quiet {
			go p.spin()
		}
	}
	return p
}

func (p *progress) set(msg string) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || msg == p.last {
		return
	}
	p.last = msg
	if !p.tty {
		fmt.Fprintf(p.w, "kubectl-tp: %s\n", msg)
	}
}

func (p *progress) spin() {
	frames := []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.mu.Lock()
			if !p.stopped && p.last != "" {
				fmt.Fprintf(p.w, "\r\033[K%c %s", frames[i%len(frames)], p.last)
			}
			p.mu.Unlock()
		}
	}
}

// stop ends the spinner and clears its line; it is idempotent.
func (p *progress) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	close(p.done)
	if p.tty && !p.quiet && p.last != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
