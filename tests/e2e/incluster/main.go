// Command incluster is an unmodified in-cluster client, as an operator or controller is: it
// takes its configuration from rest.InClusterConfig (the service-account files at their real
// paths and $KUBERNETES_SERVICE_HOST) and lists the pods of its own namespace, then tries two
// things its ServiceAccount may not do. The e2e tests run it under `kubectl tp run --from`.
//
// Output, one line each: "pods: NAME,NAME…", "secrets: OK|forbidden|error …",
// "kube-system pods: OK|forbidden|error …". Exit 1 when the configuration cannot be loaded or
// the pods cannot be listed.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		fmt.Println("config:", err)
		os.Exit(1)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Println("client:", err)
		os.Exit(1)
	}
	ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		fmt.Println("namespace:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := cs.CoreV1().Pods(string(ns)).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println("pods:", err)
		os.Exit(1)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	fmt.Println("pods:", strings.Join(names, ","))
	_, err = cs.CoreV1().Secrets(string(ns)).List(ctx, metav1.ListOptions{})
	fmt.Println("secrets:", outcome(err))
	_, err = cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	fmt.Println("kube-system pods:", outcome(err))
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "OK"
	case apierrors.IsForbidden(err):
		return "forbidden"
	}
	return "error " + err.Error()
}
