package session

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Status is one session as `kubectl tp status` shows it: its proxy pod, the Deployment it swapped
// and the swap's watchdog.
type Status struct {
	Session   string `json:"session"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Phase     string `json:"phase"`
	Alive     bool   `json:"alive"`
	Owner     string `json:"owner,omitempty"`
	From      string `json:"from,omitempty"`
	Swapped   string `json:"swappedDeployment,omitempty"`
	// Intercept is what the session intercepts: SERVICE[:PORT] and its headers ("" for none).
	Intercept string `json:"intercept,omitempty"`
	// Watchdog is the phase of the swap's watchdog pod ("" when there is none).
	Watchdog string    `json:"watchdog,omitempty"`
	Started  time.Time `json:"started"`
}

// List lists the sessions of ns ("" = all namespaces) from their proxy pods, with the
// Deployments they swapped and their watchdogs. It leaves out sessions whose proxy pods are gone.
// When the Deployments or the watchdogs cannot be listed it returns the sessions and an error
// wrapping ErrIncomplete.
func List(ctx context.Context, cs Clientset, ns string) ([]Status, error) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	var incomplete []error
	swapped := map[string]string{} // ns/pod → deployment
	if deps, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, d := range deps.Items {
			if pod := d.Annotations[AnnotationSwapPod]; pod != "" {
				swapped[d.Namespace+"/"+pod] = d.Name
			}
		}
	} else {
		incomplete = append(incomplete, fmt.Errorf("listing deployments (the SWAPPED column may miss swaps; ask for list on deployments): %w", cleanAPIError(err)))
	}
	watchdogs := map[string]string{} // session → phase of its watchdog pod
	if wds, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + WatchdogManagedBy}); err == nil {
		for _, p := range wds.Items {
			watchdogs[p.Labels[LabelSession]] = string(p.Status.Phase)
		}
	} else {
		incomplete = append(incomplete, fmt.Errorf("listing the swap watchdogs (the WATCHDOG column may be empty): %w", cleanAPIError(err)))
	}
	out := make([]Status, 0, len(pods.Items))
	for _, p := range pods.Items {
		out = append(out, Status{
			Session: p.Labels[LabelSession], Namespace: p.Namespace, Pod: p.Name,
			Phase: string(p.Status.Phase), Alive: PodAlive(&p),
			Owner: p.Annotations[AnnotationOwner], From: p.Annotations[AnnotationFrom],
			Swapped: swapped[p.Namespace+"/"+p.Name], Intercept: p.Annotations[AnnotationIntercept], Watchdog: watchdogs[p.Labels[LabelSession]], Started: p.CreationTimestamp.Time,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	if len(incomplete) > 0 {
		return out, fmt.Errorf("%w: %w", ErrIncomplete, errors.Join(incomplete...))
	}
	return out, nil
}

// ErrIncomplete is wrapped by List's error when the sessions were listed but what they swapped or
// their watchdogs could not be: the statuses returned with it are valid, and the error says which
// column to distrust and which permission is missing.
var ErrIncomplete = errors.New("status is incomplete")
