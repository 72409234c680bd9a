package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-tp/kubectl-tp/internal/version"
	"github.com/kubectl-tp/kubectl-tp/session"
)

// NewRootCommand returns `kubectl tp` with its subcommands and the standard kubectl
// connection flags (--kubeconfig, --context, -n/--namespace, --as, …).
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	return newRootCommand(streams, clientFor)
}

// newRootCommand is NewRootCommand with the clientset that shell completion lists from
// made by clients (tests pass a fake).
func newRootCommand(streams genericiooptions.IOStreams, clients clientFunc) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		// The name is the binary's, so that `completion` scripts complete kubectl-tp and never
		// take over kubectl's own completion; help shows the display name "kubectl tp".
		Use:   "kubectl-tp",
		Short: "Run a local process as if it ran in the cluster",
		Long: `kubectl tp runs one process on your machine as if it ran inside the cluster: it reaches
Services by name through SOCKS5, HTTP proxy and DNS servers on loopback, tunnelled through a
short-lived proxy pod. No root and no LD_PRELOAD are needed on your machine.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl tp",
		},
	}
	flags.AddFlags(root.PersistentFlags())
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.AddCommand(newVersionCommand(streams), newRunCommand(flags, streams), newStatusCommand(flags, streams), newCleanupCommand(flags, streams))
	addProfiling(root)
	registerCompletions(root, flags, clients)
	return root
}

// addProfiling adds kubectl's --profile and --profile-output flags: the profile starts before a
// subcommand runs and is written when it returns, whether it failed or not (cobra's post-run hooks
// do not run after an error, and `run` returns the child's exit status as one).
func addProfiling(root *cobra.Command) {
	prof := &profiling{}
	prof.addFlags(root.PersistentFlags())
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return prof.start() }
	for _, c := range root.Commands() {
		if run := c.RunE; run != nil {
			c.RunE = func(cmd *cobra.Command, args []string) error {
				err := run(cmd, args)
				if perr := prof.stop(); perr != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "kubectl tp: %v\n", perr)
				}
				return err
			}
		}
	}
}

func newVersionCommand(streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the plugin version and the podshim image it uses",
		Example: "  kubectl tp version",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(streams.Out, "kubectl-tp %s\nimage: %s\n", version.Version, version.Image())
			return nil
		},
	}
}

// clientFor returns the namespace and a clientset from the standard kubectl flags.
func clientFor(flags *genericclioptions.ConfigFlags) (string, session.Clientset, error) {
	loader := flags.ToRawKubeConfigLoader()
	if ctxName := *flags.Context; ctxName != "" {
		raw, err := loader.RawConfig()
		if err != nil {
			return "", nil, kubeconfigError(err)
		}
		if _, ok := raw.Contexts[ctxName]; !ok {
			return "", nil, fmt.Errorf("context %q does not exist in your kubeconfig; list them with: kubectl config get-contexts", ctxName)
		}
	}
	ns, _, err := loader.Namespace()
	if err != nil {
		return "", nil, kubeconfigError(err)
	}
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return "", nil, kubeconfigError(err)
	}
	cs, err := session.NewClientset(cfg)
	return ns, cs, err
}
