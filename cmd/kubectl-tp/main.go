// Command kubectl-tp is the kubectl plugin `kubectl tp`: it runs one local process as if it ran in
// the cluster (see README.md). This package only parses flags and wires the engine in package
// session; it holds no logic of its own.
package main

import (
	"fmt"
	"os"

	"github.com/kubectl-tp/kubectl-tp/capture"
	"github.com/kubectl-tp/kubectl-tp/volumes/realpaths"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	// Auth plugins (exec, OIDC, …) so that every kubeconfig kubectl accepts works here too.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	// A session starts its command through kubectl-tp itself, as the transparent-mode helper,
	// which first puts the volume copies at their real paths when asked to.
	if realpaths.IsProbe() {
		realpaths.ProbeMain()
	}
	if capture.IsHelper() {
		capture.HelperMain(realpaths.Setup)
	}
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	cmd := NewRootCommand(streams)
	if err := cmd.Execute(); err != nil {
		code := 1
		if ce, ok := err.(exitError); ok {
			code = ce.code
			if ce.err == nil {
				os.Exit(code)
			}
			err = ce.err
		}
		fmt.Fprintf(os.Stderr, "kubectl tp: %v\n", err)
		os.Exit(code)
	}
}

// exitError carries an exit code out of cobra; err, when set, is printed first.
type exitError struct {
	code int
	err  error
}

// Error returns the wrapped error's text, or the exit status.
func (e exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}
