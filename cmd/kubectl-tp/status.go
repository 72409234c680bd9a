package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-tp/kubectl-tp/session"
)

// StatusOptions are the options of `kubectl tp status`.
type StatusOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	// AllNamespaces lists sessions of every namespace.
	AllNamespaces bool
	// Output is "", "wide", "json" or "yaml".
	Output string

	namespace string
	client    session.Clientset
}

func newStatusCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &StatusOptions{configFlags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List kubectl-tp sessions and the Deployments they swapped",
		Example: `  kubectl tp status
  kubectl tp status -A -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "list sessions of every namespace")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml (default: a table)")
	return cmd
}

// Complete reads the kubeconfig.
func (o *StatusOptions) Complete() error {
	var err error
	o.namespace, o.client, err = clientFor(o.configFlags)
	return err
}

// Validate checks the output format.
func (o *StatusOptions) Validate() error {
	switch o.Output {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q is not supported; use json or yaml", o.Output)
}

// Run prints the sessions.
func (o *StatusOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	list, err := session.List(ctx, o.client, nsOrAll(o.namespace, o.AllNamespaces))
	if err != nil && !errors.Is(err, session.ErrIncomplete) {
		return err
	}
	if perr := printSessions(o.Out, list, o.Output); perr != nil {
		return perr
	}
	return err // incomplete: printed, and said (non-zero exit)
}

func printSessions(w io.Writer, list []session.Status, format string) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(list, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(list)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "No kubectl-tp sessions.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tSESSION\tPOD\tSTATE\tOWNER\tFROM\tSWAPPED\tINTERCEPT\tWATCHDOG\tAGE")
	for _, s := range list {
		state := "alive"
		if !s.Alive {
			state = "dead (" + s.Phase + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Session, s.Pod, state, dash(s.Owner), dash(s.From), dash(s.Swapped), dash(s.Intercept), dash(s.Watchdog), time.Since(s.Started).Round(time.Second))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nsOrAll(ns string, all bool) string {
	if all {
		return ""
	}
	return ns
}
