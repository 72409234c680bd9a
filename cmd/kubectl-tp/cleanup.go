package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"

	"github.com/kubectl-tp/kubectl-tp/session"
)

// CleanupOptions are the options of `kubectl tp cleanup`.
type CleanupOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	// AllNamespaces cleans every namespace.
	AllNamespaces bool

	namespace string
	client    session.Clientset
}

func newCleanupCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CleanupOptions{configFlags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Restore Deployments swapped by dead sessions and delete leftover proxy pods",
		Long: `Restore every Deployment whose swap session is gone (its proxy pod ended or was deleted) to its
recorded replica count, and delete proxy pods whose session has ended. Live sessions are left alone.

A session whose laptop crashed ends by itself once its proxy pod has not heard from it for
--idle-timeout (30 s by default); run cleanup after that.`,
		Example: `  kubectl tp cleanup
  kubectl tp cleanup -A`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "clean every namespace")
	return cmd
}

// Complete reads the kubeconfig.
func (o *CleanupOptions) Complete() error {
	var err error
	o.namespace, o.client, err = clientFor(o.configFlags)
	return err
}

// Run restores and deletes; it prints one line per action.
func (o *CleanupOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ns := nsOrAll(o.namespace, o.AllNamespaces)
	deps, err := o.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing Deployments: %w", err)
	}
	actions := 0
	for _, d := range deps.Items {
		sess, pod := d.Annotations[session.AnnotationSwapSession], d.Annotations[session.AnnotationSwapPod]
		if sess == "" {
			continue
		}
		alive, err := session.SessionAlive(ctx, o.client, d.Namespace, pod)
		if err != nil {
			return err
		}
		if alive {
			fmt.Fprintf(o.Out, "deployment/%s in %s: swapped by live session %s (pod %s); left alone\n", d.Name, d.Namespace, sess, pod)
			continue
		}
		restored, err := session.RestoreDeployment(o.client, d.Namespace, d.Name, sess)
		if err != nil {
			return fmt.Errorf("restoring deployment/%s in %s: %w", d.Name, d.Namespace, err)
		}
		if restored {
			actions++
			fmt.Fprintf(o.Out, "deployment/%s in %s: restored to %s replicas (session %s was gone)\n", d.Name, d.Namespace, d.Annotations[session.AnnotationSwapReplicas], sess)
		}
	}
	pods, err := o.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: session.LabelManagedBy + "=" + session.ManagedBy})
	if err != nil {
		return fmt.Errorf("listing proxy pods: %w", err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			continue
		}
		err := o.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		actions++
		fmt.Fprintf(o.Out, "pod/%s in %s: deleted (session %s ended: %s)\n", p.Name, p.Namespace, p.Labels[session.LabelSession], p.Status.Phase)
	}
	lines, err := session.CleanupIntercepts(ctx, o.client, ns)
	for _, l := range lines {
		fmt.Fprintln(o.Out, l)
		if !strings.HasSuffix(l, "left alone") {
			actions++
		}
	}
	if err != nil {
		return err
	}
	session.SweepStaleCopies(o.Out)
	if actions == 0 {
		fmt.Fprintln(o.Out, "Nothing to clean up in the cluster.")
	}
	return nil
}
