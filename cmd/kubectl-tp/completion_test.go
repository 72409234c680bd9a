package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-tp/kubectl-tp/session"
)

// testCluster is what the fake clientset of these tests holds.
func testCluster() *fake.Clientset {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "staging"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}},
		&appsv1.Deployment{ObjectMeta: meta("default", "web")},
		&appsv1.Deployment{ObjectMeta: meta("default", "api")},
		&appsv1.Deployment{ObjectMeta: meta("default", "api-worker")},
		&appsv1.Deployment{ObjectMeta: meta("staging", "billing")},
		&appsv1.StatefulSet{ObjectMeta: meta("default", "db")},
		&appsv1.DaemonSet{ObjectMeta: meta("default", "agent")},
		&appsv1.ReplicaSet{ObjectMeta: meta("default", "api-5d9f")},
		&corev1.Pod{ObjectMeta: meta("default", "api-5d9f-xk2q")},
	}
	return fake.NewClientset(objs...)
}

// fakeClients is a clientFunc over cs that honours -n like clientFor does.
func fakeClients(cs session.Clientset) clientFunc {
	return func(flags *genericclioptions.ConfigFlags) (string, session.Clientset, error) {
		if ns := *flags.Namespace; ns != "" {
			return ns, cs, nil
		}
		return "default", cs, nil
	}
}

func TestWorkloadNames(t *testing.T) {
	cs := testCluster()
	tests := []struct {
		ns, kind string
		want     []string
		wantErr  bool
	}{
		{"default", "deployments", []string{"api", "api-worker", "web"}, false},
		{"staging", "deployments", []string{"billing"}, false},
		{"empty", "deployments", nil, false},
		{"default", "statefulsets", []string{"db"}, false},
		{"default", "daemonsets", []string{"agent"}, false},
		{"default", "replicasets", []string{"api-5d9f"}, false},
		{"default", "pods", []string{"api-5d9f-xk2q"}, false},
		{"default", "jobs", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.ns+"/"+tc.kind, func(t *testing.T) {
			got, err := session.WorkloadNames(context.Background(), cs, tc.ns, tc.kind)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNamespaceNames(t *testing.T) {
	tests := []struct {
		name    string
		cs      session.Clientset
		want    []string
		wantErr bool
	}{
		{"three", testCluster(), []string{"default", "kube-system", "staging"}, false},
		{"none", fake.NewClientset(), []string{}, false},
		{"list fails", failingClientset(), nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := namespaceNames(context.Background(), tc.cs)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// failingClientset answers every list with an error, like a cluster that forbids it.
func failingClientset() *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("forbidden")
	})
	return cs
}

func TestCompleteFrom(t *testing.T) {
	cs := testCluster()
	const noFile, noSpace = cobra.ShellCompDirectiveNoFileComp, cobra.ShellCompDirectiveNoSpace
	tests := []struct {
		ns, toComplete string
		want           []string
		directive      cobra.ShellCompDirective
	}{
		{"default", "", []string{"api", "api-worker", "web", "deployment/", "statefulset/", "daemonset/", "replicaset/", "pod/"}, noFile},
		{"default", "ap", []string{"api", "api-worker"}, noFile},
		{"default", "d", []string{"deployment/", "daemonset/"}, noFile | noSpace},
		{"default", "deployment/", []string{"deployment/api", "deployment/api-worker", "deployment/web"}, noFile},
		{"default", "deploy/w", []string{"deploy/web"}, noFile},
		{"default", "sts/", []string{"sts/db"}, noFile},
		{"default", "statefulset/d", []string{"statefulset/db"}, noFile},
		{"default", "ds/", []string{"ds/agent"}, noFile},
		{"default", "rs/", []string{"rs/api-5d9f"}, noFile},
		{"default", "pod/api", []string{"pod/api-5d9f-xk2q"}, noFile},
		{"default", "job/", nil, noFile},
		{"staging", "", []string{"billing", "deployment/", "statefulset/", "daemonset/", "replicaset/", "pod/"}, noFile},
		{"empty", "", []string{"deployment/", "statefulset/", "daemonset/", "replicaset/", "pod/"}, noFile | noSpace},
	}
	for _, tc := range tests {
		t.Run(tc.ns+":"+tc.toComplete, func(t *testing.T) {
			got, dir := completeFrom(context.Background(), cs, tc.ns, tc.toComplete)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if dir != tc.directive {
				t.Errorf("directive = %d, want %d", dir, tc.directive)
			}
		})
	}
}

func TestCompletionsRegistered(t *testing.T) {
	root := newRootCommand(genericiooptions.NewTestIOStreamsDiscard(), fakeClients(testCluster()))
	tests := []struct{ cmd, flag string }{
		{"", "namespace"}, {"", "context"}, {"", "cluster"}, {"", "user"},
		{"run", "namespace"}, {"run", "from"}, {"run", "swap-deployment"}, {"run", "env-syntax"}, {"run", "image"},
		{"status", "output"}, {"cleanup", "namespace"},
	}
	for _, tc := range tests {
		t.Run(tc.cmd+"--"+tc.flag, func(t *testing.T) {
			c, _, err := root.Find(strings.Fields(tc.cmd))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c.GetFlagCompletionFunc(tc.flag); !ok {
				t.Errorf("%q has no completion for --%s", c.CommandPath(), tc.flag)
			}
		})
	}
}

// kubeconfig writes a kubeconfig with two contexts and returns its path.
func kubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- {name: prod, cluster: {server: "https://prod.invalid:6443"}}
- {name: dev, cluster: {server: "https://dev.invalid:6443"}}
users:
- {name: alice, user: {token: x}}
contexts:
- {name: prod-admin, context: {cluster: prod, user: alice}}
- {name: dev, context: {cluster: dev, user: alice, namespace: staging}}
current-context: dev
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDunderComplete drives cobra's __complete request, the one kubectl_complete-tp makes for
// `kubectl tp <TAB>`, through the real command tree with a fake cluster.
func TestDunderComplete(t *testing.T) {
	kc := kubeconfig(t)
	tests := []struct {
		name string
		args []string
		want []string // the lines of stdout, directive last
	}{
		{"subcommand", []string{"st"}, []string{"status\tList kubectl-tp sessions and the Deployments they swapped", ":4"}},
		{"subcommands", []string{"c"}, []string{"cleanup\tRestore Deployments swapped by dead sessions and delete leftover proxy pods", "completion\tGenerate the autocompletion script for the specified shell", ":4"}},
		{"completion shells", []string{"completion", "z"}, []string{"zsh\tGenerate the autocompletion script for zsh", ":4"}},
		{"namespace", []string{"run", "-n", "s"}, []string{"staging", ":4"}},
		{"namespace long", []string{"status", "--namespace", ""}, []string{"default", "kube-system", "staging", ":4"}},
		{"swap-deployment", []string{"run", "--swap-deployment", "a"}, []string{"api", "api-worker", ":4"}},
		{"swap-deployment in -n", []string{"run", "-n", "staging", "--swap-deployment", ""}, []string{"billing", ":4"}},
		{"from", []string{"run", "--from", "sts/"}, []string{"sts/db", ":4"}},
		{"from types", []string{"run", "--from", "p"}, []string{"pod/", ":6"}},
		{"context", []string{"--kubeconfig", kc, "--context", ""}, []string{"dev", "prod-admin", ":4"}},
		{"cluster", []string{"run", "--kubeconfig", kc, "--cluster", "p"}, []string{"prod", ":4"}},
		{"user", []string{"--kubeconfig", kc, "--user", ""}, []string{"alice", ":4"}},
		{"output", []string{"status", "-o", ""}, []string{"json", "yaml", ":4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			root := newRootCommand(genericiooptions.IOStreams{Out: &out, ErrOut: &bytes.Buffer{}}, fakeClients(testCluster()))
			root.SetArgs(append([]string{cobra.ShellCompRequestCmd}, tc.args...))
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("__complete %q printed\n%q\nwant\n%q", tc.args, got, tc.want)
			}
		})
	}
}

// TestCompletionScripts checks that `completion SHELL` completes the kubectl-tp binary and
// never registers for kubectl itself, which would take over kubectl's own completion.
func TestCompletionScripts(t *testing.T) {
	tests := []struct {
		shell, want, never string
	}{
		{"bash", "complete -o default -F __start_kubectl-tp kubectl-tp", "-F __start_kubectl kubectl"},
		{"zsh", "#compdef kubectl-tp", "#compdef kubectl\n"},
		{"fish", "complete -c kubectl-tp ", "complete -c kubectl "},
		{"powershell", "Register-ArgumentCompleter -CommandName 'kubectl-tp'", "-CommandName 'kubectl'"},
	}
	for _, tc := range tests {
		t.Run(tc.shell, func(t *testing.T) {
			var out bytes.Buffer
			root := newRootCommand(genericiooptions.IOStreams{Out: &out, ErrOut: &bytes.Buffer{}}, fakeClients(testCluster()))
			root.SetArgs([]string{"completion", tc.shell})
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if s := out.String(); !strings.Contains(s, tc.want) || strings.Contains(s, tc.never) {
				t.Errorf("completion %s: want %q and no %q in:\n%.400s", tc.shell, tc.want, tc.never, s)
			}
		})
	}
}

// TestCompletionHelp checks the help of `completion`, which tells how `kubectl tp <TAB>` works.
func TestCompletionHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"completion", "--help"}, []string{"kubectl tp completion [command]", "kubectl_complete-tp", "source <(kubectl completion bash)", "Available Commands:"}},
		{[]string{"--help"}, []string{"kubectl tp [command]", "completion  "}},
		{[]string{"run", "--help"}, []string{"kubectl tp run [flags] -- COMMAND [ARGS...]"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			root := newRootCommand(genericiooptions.IOStreams{Out: &out, ErrOut: &bytes.Buffer{}}, fakeClients(testCluster()))
			root.SetArgs(tc.args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("help lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
