package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/capture"
	"github.com/kubectl-tp/kubectl-tp/volumes/realpaths"

	"github.com/creack/pty"
	"golang.org/x/term"
)

// StopGrace is how long a child asked to stop (Child.Stop) has before it is killed.
const StopGrace = 10 * time.Second

// ExitCommandNotFound is the exit code when the command cannot be found, as in POSIX shells.
const ExitCommandNotFound = 127

// Child describes the local process a session runs.
type Child struct {
	// Argv is the command and its arguments; Argv[0] is looked up in PATH.
	Argv []string
	// Env is the complete environment of the child.
	Env []string
	// Stdin, Stdout and Stderr are the child's streams. When Stdin is a terminal the child runs in a
	// pseudo-terminal in raw mode, and window-size changes are passed on.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Stop, when closed, asks the child to end: SIGTERM, then SIGKILL after StopGrace.
	Stop <-chan struct{}
	// Cancelled, when closed before the child starts, means a signal came while the session was
	// starting: Run then starts nothing and returns context.Canceled. (Checked after Run's own
	// signal handler is in place, so no signal falls between the two.)
	Cancelled <-chan struct{}
	// BeforeSignal, when set, runs on the first SIGINT, SIGTERM or SIGHUP, before that signal is
	// passed on (a swap hands its traffic back to the cluster while the child still serves). A
	// second signal during it is passed on at once, with the first.
	BeforeSignal func()
	// Capture, when set, runs the child in transparent mode under this supervisor, which Run
	// closes when the child has exited.
	Capture *capture.Supervisor
	// RealPaths, with Capture, are volume copies the child sees at their real paths (its helper
	// applies them; see package volumes/realpaths).
	RealPaths []realpaths.Mount
}

// LookPath resolves argv0 like the shell does, with an error a user understands.
func LookPath(argv0 string) (string, error) {
	p, err := exec.LookPath(argv0)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("command not found: %s (give a program on PATH or a path to one after --)", argv0)
		}
		return "", fmt.Errorf("cannot run %s: %w", argv0, err)
	}
	return p, nil
}

// Run starts the child, forwards SIGINT, SIGTERM and SIGHUP to it, and returns its exit code
// (128+N when a signal N ended it, as shells report it).
func (c Child) Run() (int, error) {
	path, err := LookPath(c.Argv[0])
	if err != nil {
		return ExitCommandNotFound, err
	}
	cmd := exec.Command(path, c.Argv[1:]...)
	cmd.Args[0] = c.Argv[0]
	cmd.Env = c.Env
	if c.Capture != nil {
		if err := c.Capture.Prepare(cmd); err != nil {
			return 1, err
		}
		defer c.Capture.Close()
		if len(c.RealPaths) > 0 {
			if err := realpaths.Prepare(cmd, c.RealPaths); err != nil {
				return 1, err
			}
		}
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	select {
	case <-c.Cancelled:
		return 1, context.Canceled
	default:
	}

	if f, ok := c.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return c.runPTY(cmd, f, sigs)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
	// Its own process group: a signal reaches it once, from us, not twice (terminal + us).
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return ExitCommandNotFound, fmt.Errorf("cannot start %s: %w", c.Argv[0], err)
	}
	if err := c.attach(cmd); err != nil {
		return 1, err
	}
	return c.wait(cmd, sigs)
}

func (c Child) runPTY(cmd *exec.Cmd, tty *os.File, sigs chan os.Signal) (int, error) {
	// Start with the terminal's size, so the child never sees 0x0; later changes follow SIGWINCH.
	size, _ := pty.GetsizeFull(tty)
	ptmx, err := pty.StartWithSize(cmd, size)
	if err != nil {
		return ExitCommandNotFound, fmt.Errorf("cannot start %s in a terminal: %w", c.Argv[0], err)
	}
	defer ptmx.Close()
	if err := c.attach(cmd); err != nil {
		return 1, err
	}
	stopResize := followWindowSize(tty, ptmx)
	defer stopResize()
	if old, err := term.MakeRaw(int(tty.Fd())); err == nil {
		defer func() { _ = term.Restore(int(tty.Fd()), old) }()
	}
	go func() { _, _ = io.Copy(ptmx, c.Stdin) }()
	outDone := make(chan struct{})
	go func() { _, _ = io.Copy(c.Stdout, ptmx); close(outDone) }()
	code, err := c.wait(cmd, sigs)
	<-outDone
	return code, err
}

// attach hands the started child's seccomp listener to the supervisor; on failure the child,
// still waiting in the helper, is killed.
func (c Child) attach(cmd *exec.Cmd) error {
	if c.Capture == nil {
		return nil
	}
	if err := c.Capture.Attach(); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("transparent mode: %w", err)
	}
	return nil
}

// wait forwards signals until the child exits and converts its status to an exit code.
func (c Child) wait(cmd *exec.Cmd, sigs chan os.Signal) (int, error) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := c.Stop
	var kill <-chan time.Time
	var held []os.Signal     // signals waiting for BeforeSignal
	var before chan struct{} // closed when BeforeSignal returns; nil when not running
	forward := func() {
		for _, s := range held {
			_ = cmd.Process.Signal(s)
		}
		held, before = nil, nil
	}
	for {
		select {
		case <-before:
			forward()
		case <-stop:
			stop = nil
			_ = cmd.Process.Signal(syscall.SIGTERM)
			kill = time.After(StopGrace)
		case <-kill:
			_ = cmd.Process.Kill()
		case s := <-sigs:
			held = append(held, s)
			if b := c.BeforeSignal; b != nil {
				c.BeforeSignal = nil
				before = make(chan struct{})
				go func(done chan struct{}) { b(); close(done) }(before)
			} else {
				forward()
			}
		case err := <-done:
			return exitCode(cmd, err)
		}
	}
}

func exitCode(cmd *exec.Cmd, err error) (int, error) {
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return 1, err
	}
	st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && st.Signaled() {
		return 128 + int(st.Signal()), nil
	}
	return cmd.ProcessState.ExitCode(), nil
}
