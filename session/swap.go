package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// Annotations a swap records on the Deployment, so that any later kubectl-tp (this session's
// shut-down, `kubectl tp cleanup`, or the next swap) can restore it.
const (
	AnnotationSwapSession  = "kubectl-tp.io/swap-session"
	AnnotationSwapPod      = "kubectl-tp.io/swap-pod"
	AnnotationSwapReplicas = "kubectl-tp.io/swap-replicas"
	AnnotationSwapOwner    = "kubectl-tp.io/swap-owner"
	AnnotationSwapStarted  = "kubectl-tp.io/swap-started"
)

var swapAnnotations = []string{AnnotationSwapSession, AnnotationSwapPod, AnnotationSwapReplicas, AnnotationSwapOwner, AnnotationSwapStarted}

// SwapPermissions are what --swap-deployment needs besides RunPermissions.
var SwapPermissions = []Permission{
	{Verb: "get", Resource: "deployments"},
	{Verb: "update", Resource: "deployments"},
}

// SwapInfo describes a recorded swap.
type SwapInfo struct {
	Deployment, Namespace string
	Session, Pod, Owner   string
	Started               time.Time
	Replicas              int32
}

func swapInfo(d *appsv1.Deployment) (SwapInfo, bool) {
	a := d.Annotations
	if a[AnnotationSwapSession] == "" {
		return SwapInfo{}, false
	}
	n, _ := strconv.Atoi(a[AnnotationSwapReplicas])
	started, _ := time.Parse(time.RFC3339, a[AnnotationSwapStarted])
	return SwapInfo{
		Deployment: d.Name, Namespace: d.Namespace,
		Session: a[AnnotationSwapSession], Pod: a[AnnotationSwapPod], Owner: a[AnnotationSwapOwner],
		Started: started, Replicas: int32(n),
	}, true
}

// SessionAlive reports whether the proxy pod of a session still serves: it exists, is not being
// deleted and has not ended (podshim ends by itself once its client is gone).
func SessionAlive(ctx context.Context, cs Clientset, ns, pod string) (bool, error) {
	p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return PodAlive(p), nil
}

// PodAlive is the one rule for "this proxy pod still serves its session": it is not being deleted
// and has not ended (podshim ends by itself once its client is gone).
func PodAlive(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && (p.Status.Phase == corev1.PodPending || p.Status.Phase == corev1.PodRunning)
}

// ErrSwappedByLiveSession is returned when a live session already holds the Deployment.
var ErrSwappedByLiveSession = errors.New("already swapped by a live session")

// claimDeployment records the swap on the Deployment (replicas are left as they are until
// scaleDown, so that the proxy pod can take traffic before the app stops: make before break). A
// swap left by a dead session is restored first; one held by a live session is an error naming it.
// It returns the original replica count.
func claimDeployment(ctx context.Context, cs Clientset, ns, name string, info SwapInfo, warn func(string)) (int32, error) {
	deps := cs.AppsV1().Deployments(ns)
	var original int32
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deps.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if prev, ok := swapInfo(d); ok {
			alive, err := SessionAlive(ctx, cs, ns, prev.Pod)
			if err != nil {
				return err
			}
			if alive {
				return fmt.Errorf("deployment/%s is %w %s of %s (since %s); wait for it to end, or stop it", name, ErrSwappedByLiveSession, prev.Session, prev.Owner, prev.Started.Format(time.RFC3339))
			}
			warn(fmt.Sprintf("deployment/%s was left swapped by session %s of %s, which is gone; restoring it to %d replicas first", name, prev.Session, prev.Owner, prev.Replicas))
			d.Spec.Replicas = ptr.To(prev.Replicas)
		}
		original = 1
		if d.Spec.Replicas != nil {
			original = *d.Spec.Replicas
		}
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[AnnotationSwapSession] = info.Session
		d.Annotations[AnnotationSwapPod] = info.Pod
		d.Annotations[AnnotationSwapOwner] = info.Owner
		d.Annotations[AnnotationSwapStarted] = info.Started.UTC().Format(time.RFC3339)
		d.Annotations[AnnotationSwapReplicas] = strconv.Itoa(int(original))
		_, err = deps.Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-tp"})
		return err
	})
	if apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("deployment/%s not found in namespace %q; list them with: kubectl get deployments -n %s", name, ns, ns)
	}
	return original, err
}

// scaleDown scales the Deployment to 0 if the swap recorded on it is still this session's.
func scaleDown(ctx context.Context, cs Clientset, ns, name, session string) error {
	deps := cs.AppsV1().Deployments(ns)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deps.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if info, ok := swapInfo(d); !ok || info.Session != session {
			return fmt.Errorf("deployment/%s is no longer recorded as swapped by this session", name)
		}
		d.Spec.Replicas = ptr.To[int32](0)
		_, err = deps.Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-tp"})
		return err
	})
}

// RestoreDeployment scales a swapped Deployment back to its recorded replica count and removes the
// swap annotations. With session non-empty it only restores a swap held by that session. It uses a
// fresh context so that it runs even after a signal. It reports whether it restored anything.
func RestoreDeployment(cs Clientset, ns, name, session string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deps := cs.AppsV1().Deployments(ns)
	restored := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		restored = false
		d, err := deps.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		info, ok := swapInfo(d)
		if !ok || (session != "" && info.Session != session) {
			return nil
		}
		for _, a := range swapAnnotations {
			delete(d.Annotations, a)
		}
		d.Spec.Replicas = ptr.To(info.Replicas)
		if _, err := deps.Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-tp"}); err != nil {
			return err
		}
		restored = true
		return nil
	})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return restored, err
}

// hpaWarning names the HorizontalPodAutoscalers that target the Deployment. An HPA does not scale a
// workload whose replicas are 0 ("ScalingDisabled"), so the swap holds; after the restore it resumes.
func hpaWarning(ctx context.Context, cs Clientset, ns, name string) string {
	list, err := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	for _, h := range list.Items {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == name {
			return fmt.Sprintf("deployment/%s is scaled by HorizontalPodAutoscaler %s; it pauses while replicas are 0 and resumes when the swap ends", name, h.Name)
		}
	}
	return ""
}

// exposedPorts returns the TCP container ports of c, mapped to the same local port unless remapped.
func exposedPorts(c *corev1.Container, remap []PortMap) []PortMap {
	var out []PortMap
	seen := map[int]bool{}
	for _, m := range remap {
		out = append(out, m)
		seen[m.Remote] = true
	}
	for _, p := range c.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if !seen[int(p.ContainerPort)] {
			out = append(out, PortMap{Local: int(p.ContainerPort), Remote: int(p.ContainerPort)})
			seen[int(p.ContainerPort)] = true
		}
	}
	return out
}

// PortMap is one --expose LOCAL[:REMOTE].
type PortMap struct{ Local, Remote int }

// ParsePortMap parses LOCAL[:REMOTE].
func ParsePortMap(s string) (PortMap, error) {
	l, r, has := strings.Cut(s, ":")
	local, err1 := strconv.Atoi(l)
	remote := local
	var err2 error
	if has {
		remote, err2 = strconv.Atoi(r)
	}
	if err1 != nil || err2 != nil || local < 1 || local > 65535 || remote < 1 || remote > 65535 {
		return PortMap{}, fmt.Errorf("--expose %q: want LOCAL[:REMOTE] with ports 1-65535, e.g. --expose 3000 or --expose 8080:80", s)
	}
	return PortMap{Local: local, Remote: remote}, nil
}
