package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/kubectl-tp/kubectl-tp/session"
)

// completionTimeout bounds the cluster calls of one completion request, so that <TAB> on an
// unreachable cluster gives no choices after a moment instead of hanging the shell.
const completionTimeout = 5 * time.Second

// clientFunc returns the namespace and a clientset for the connection flags as parsed so far;
// it is clientFor outside tests.
type clientFunc func(*genericclioptions.ConfigFlags) (string, session.Clientset, error)

// fromTypes are the workload types of --from TYPE/NAME, offered before a "/" is typed.
var fromTypes = []string{"deployment", "statefulset", "daemonset", "replicaset", "pod"}

// completionLong replaces the help of cobra's `completion` command: through kubectl the
// completion is kubectl's own, extended by the kubectl_complete-tp executable.
const completionLong = `Generate the shell completion script for kubectl-tp.

For "kubectl tp <TAB>" (kubectl 1.26 or newer) no script from here is needed: kubectl's own
completion (source <(kubectl completion bash), or zsh, fish, powershell) asks the executable
kubectl_complete-tp, shipped next to kubectl-tp in the release archives, for the choices. Put it
on your PATH beside kubectl-tp. With krew, copy it from the plugin's directory once:

  cp "${KREW_ROOT:-$HOME/.krew}"/store/tp/*/kubectl_complete-tp "${KREW_ROOT:-$HOME/.krew}/bin/"

The scripts printed by the subcommands below complete the binary when you call it by its own
name, kubectl-tp. Namespaces, contexts, clusters, users and workload names are listed from the
cluster and kubeconfig that the flags typed so far select.`

// registerCompletions adds cobra's `completion` command with our help, and completion
// functions for the connection flags of root and the flags of the subcommands that name
// cluster objects. It panics when a flag it names does not exist, a programming error that
// TestCompletionsRegistered catches.
func registerCompletions(root *cobra.Command, flags *genericclioptions.ConfigFlags, clients clientFunc) {
	root.InitDefaultCompletionCmd()
	must := func(c *cobra.Command, flag string, f cobra.CompletionFunc) {
		if err := c.RegisterFlagCompletionFunc(flag, f); err != nil {
			panic(fmt.Sprintf("registering completion of --%s on %q: %v", flag, c.Name(), err))
		}
	}
	must(root, "namespace", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return withClient(flags, clients, func(ctx context.Context, cs session.Clientset, _ string) ([]string, cobra.ShellCompDirective) {
			names, err := namespaceNames(ctx, cs)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return withPrefix(names, toComplete), cobra.ShellCompDirectiveNoFileComp
		})
	})
	for flag, names := range map[string]func(raw kubeconfigNames) []string{
		"context": func(k kubeconfigNames) []string { return k.contexts },
		"cluster": func(k kubeconfigNames) []string { return k.clusters },
		"user":    func(k kubeconfigNames) []string { return k.users },
	} {
		must(root, flag, func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return withPrefix(names(kubeconfigNamesOf(flags)), toComplete), cobra.ShellCompDirectiveNoFileComp
		})
	}
	for _, c := range root.Commands() {
		switch c.Name() {
		case "run":
			must(c, "swap-deployment", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				return withClient(flags, clients, func(ctx context.Context, cs session.Clientset, ns string) ([]string, cobra.ShellCompDirective) {
					names, err := session.WorkloadNames(ctx, cs, ns, "deployments")
					if err != nil {
						return nil, cobra.ShellCompDirectiveNoFileComp
					}
					return withPrefix(names, toComplete), cobra.ShellCompDirectiveNoFileComp
				})
			})
			must(c, "from", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				return withClient(flags, clients, func(ctx context.Context, cs session.Clientset, ns string) ([]string, cobra.ShellCompDirective) {
					return completeFrom(ctx, cs, ns, toComplete)
				})
			})
			must(c, "env-syntax", cobra.FixedCompletions([]string{"docker", "posix", "json"}, cobra.ShellCompDirectiveNoFileComp))
			must(c, "image", cobra.NoFileCompletions)
		case "status":
			must(c, "output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
		case "completion":
			c.Long = completionLong
			c.Example = "  # kubectl tp <TAB> through kubectl's completion: kubectl_complete-tp on PATH, then\n" +
				"  source <(kubectl completion bash)\n\n" +
				"  # kubectl-tp <TAB> when called by its own name\n" +
				"  source <(kubectl-tp completion bash)"
		}
	}
}

// withClient runs list with a clientset and namespace from the flags and a deadline of
// completionTimeout; without a usable kubeconfig there is nothing to offer.
func withClient(flags *genericclioptions.ConfigFlags, clients clientFunc, list func(context.Context, session.Clientset, string) ([]string, cobra.ShellCompDirective)) ([]string, cobra.ShellCompDirective) {
	ns, cs, err := clients(flags)
	if err != nil {
		cobra.CompDebugln("kubectl-tp: no client for completion: "+err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	return list(ctx, cs, ns)
}

// completeFrom completes --from TYPE/NAME[:CONTAINER] the way kubectl completes
// `kubectl logs`: before a "/", bare Deployment names (a bare NAME means deployment/NAME)
// and the types as "TYPE/"; after it, TYPE/NAME for the objects of that type.
func completeFrom(ctx context.Context, cs session.Clientset, ns, toComplete string) ([]string, cobra.ShellCompDirective) {
	directive := cobra.ShellCompDirectiveNoFileComp
	typ, prefix, hasType := strings.Cut(toComplete, "/")
	if !hasType {
		names, err := session.WorkloadNames(ctx, cs, ns, "deployments")
		if err != nil {
			names = nil
		}
		comps := withPrefix(names, toComplete)
		if len(comps) == 0 {
			// Only "TYPE/" choices: the shell must not add a space after the "/".
			directive |= cobra.ShellCompDirectiveNoSpace
		}
		for _, t := range fromTypes {
			if strings.HasPrefix(t, toComplete) {
				comps = append(comps, t+"/")
			}
		}
		return comps, directive
	}
	target, err := session.ParseTarget(typ + "/x")
	if err != nil {
		return nil, directive
	}
	names, err := session.WorkloadNames(ctx, cs, ns, target.Kind)
	if err != nil {
		return nil, directive
	}
	comps := withPrefix(names, prefix)
	for i, n := range comps {
		comps[i] = typ + "/" + n
	}
	return comps, directive
}

// namespaceNames lists the names of the cluster's namespaces, sorted.
func namespaceNames(ctx context.Context, cs session.Clientset) ([]string, error) {
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list.Items))
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names, nil
}

// kubeconfigNames are the context, cluster and user names of a kubeconfig, sorted.
type kubeconfigNames struct {
	contexts, clusters, users []string
}

// kubeconfigNamesOf reads the names from the kubeconfig the flags select (--kubeconfig,
// else $KUBECONFIG, else ~/.kube/config); an unreadable kubeconfig has none.
func kubeconfigNamesOf(flags *genericclioptions.ConfigFlags) kubeconfigNames {
	raw, err := flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return kubeconfigNames{}
	}
	var k kubeconfigNames
	for n := range raw.Contexts {
		k.contexts = append(k.contexts, n)
	}
	for n := range raw.Clusters {
		k.clusters = append(k.clusters, n)
	}
	for n := range raw.AuthInfos {
		k.users = append(k.users, n)
	}
	sort.Strings(k.contexts)
	sort.Strings(k.clusters)
	sort.Strings(k.users)
	return k
}

// withPrefix returns the names that begin with prefix, in their order.
func withPrefix(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}
