package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/contract"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
)

// Labels and annotations that mark what a session created.
const (
	// LabelManagedBy is set to ManagedBy on every pod kubectl-tp creates.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of LabelManagedBy.
	ManagedBy = "kubectl-tp"
	// LabelSession carries the session id.
	LabelSession = "kubectl-tp.io/session"
	// AnnotationOwner records user@host of the laptop that started the session.
	AnnotationOwner = "kubectl-tp.io/owner"
	// ContainerName is the name of the podshim container in the proxy pod.
	ContainerName = "podshim"
	// TunnelPort is the port podshim listens on, on 127.0.0.1 inside the pod.
	TunnelPort = contract.TunnelPort
)

// podSpec describes the proxy pod of a plain `kubectl tp run`.
type podSpec struct {
	Name, Namespace, SessionID, Owner string
	Image, Token                      string
	IdleTimeout                       time.Duration
	// Direct starts podshim's direct-path listener (TLS, pinned certificates) on DirectPort.
	Direct bool
}

// buildPod returns a pod that Pod Security "restricted" admits: non-root, no capabilities, no
// privilege escalation, RuntimeDefault seccomp, read-only root filesystem.
func buildPod(s podSpec) *corev1.Pod {
	args := []string{
		contract.Arg(contract.FlagListen, fmt.Sprintf("127.0.0.1:%d", TunnelPort)),
		contract.Arg(contract.FlagIdleTimeout, s.IdleTimeout),
	}
	if s.Direct {
		args = append(args, contract.Arg(contract.FlagDirect, fmt.Sprintf(":%d", contract.DirectPort)))
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        s.Name,
			Namespace:   s.Namespace,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelSession: s.SessionID},
			Annotations: map[string]string{AnnotationOwner: s.Owner},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				RunAsGroup:     ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           s.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            args,
				Env:             []corev1.EnvVar{{Name: contract.TokenVar, Value: s.Token}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{
						corev1.ResourceCPU:    resource.MustParse("10m"),
						corev1.ResourceMemory: resource.MustParse("16Mi"),
					},
					Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					RunAsNonRoot:             ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
		},
	}
}

// waitReady watches the pod until its podshim container runs, and fails fast, with the reason the
// cluster gives, when it cannot start.
func waitReady(ctx context.Context, cs Clientset, ns, name string, progress func(string)) (*corev1.Pod, error) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, err
		}
		if len(list.Items) == 0 {
			return nil, fmt.Errorf("proxy pod %s/%s disappeared while starting", ns, name)
		}
		pod := &list.Items[0]
		if done, err := podStarted(ctx, cs, pod, progress); done || err != nil {
			return pod, err
		}
		w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			return nil, err
		}
		pod, err = watchPod(ctx, cs, w, progress)
		w.Stop()
		if err != nil || pod != nil {
			return pod, err
		}
		// The watch ended without a verdict (timeout, compaction): list and watch again.
	}
}

func watchPod(ctx context.Context, cs Clientset, w watch.Interface, progress func(string)) (*corev1.Pod, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return nil, errors.New("proxy pod was deleted while starting")
			case watch.Error:
				return nil, nil
			}
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if done, err := podStarted(ctx, cs, pod, progress); done || err != nil {
				return pod, err
			}
		}
	}
}

// waitingFailures are container waiting reasons after which the pod will not start by itself
// soon enough to be worth waiting for.
var waitingFailures = map[string]struct{ what, fix string }{
	"ErrImagePull":               {"the image cannot be pulled", imageFix},
	"ImagePullBackOff":           {"the image cannot be pulled", imageFix},
	"InvalidImageName":           {"the image name is invalid", imageFix},
	"ErrImageNeverPull":          {"the image is not on the node and the pull policy forbids pulling", imageFix},
	"CreateContainerConfigError": {"the container configuration is invalid", "check what the workload's env and volumes refer to (a missing Secret, ConfigMap or key?)"},
	"CreateContainerError":       {"the container could not be created", "kubectl describe pod shows the runtime's reason"},
	"RunContainerError":          {"the container could not be started", "kubectl describe pod shows the runtime's reason"},
	"CrashLoopBackOff":           {"the container keeps crashing", "kubectl logs shows why; check --image"},
}

// imageFix is the advice for image problems.
const imageFix = "check --image and that the node can pull it"

// podStarted reports whether the podshim container runs (true, nil), cannot start (true, err), or
// is still on its way (false, nil).
func podStarted(ctx context.Context, cs Clientset, pod *corev1.Pod, progress func(string)) (bool, error) {
	switch pod.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return true, fmt.Errorf("proxy pod %s ended (%s) before the session could start: %s", pod.Name, pod.Status.Phase, terminatedReason(pod))
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true, fmt.Errorf("proxy pod %s cannot be scheduled: %s", pod.Name, c.Message)
		}
	}
	for _, st := range pod.Status.ContainerStatuses {
		if st.Name != ContainerName {
			continue
		}
		if st.State.Running != nil {
			return true, nil
		}
		if wt := st.State.Waiting; wt != nil {
			if f, bad := waitingFailures[wt.Reason]; bad {
				return true, fmt.Errorf("proxy pod %s cannot start: %s (%s: %s); %s", pod.Name, f.what, wt.Reason, oneLine(wt.Message), f.fix)
			}
			if wt.Reason != "" {
				progress("pod " + pod.Name + ": " + wt.Reason)
			}
		}
		if t := st.State.Terminated; t != nil {
			return true, fmt.Errorf("proxy pod %s: podshim exited (%s, code %d): %s", pod.Name, t.Reason, t.ExitCode, oneLine(t.Message))
		}
	}
	if pod.Spec.NodeName == "" {
		progress("pod " + pod.Name + ": waiting to be scheduled")
	} else {
		progress("pod " + pod.Name + ": starting on " + pod.Spec.NodeName)
	}
	_ = ctx
	return false, nil
}

func terminatedReason(pod *corev1.Pod) string {
	for _, st := range pod.Status.ContainerStatuses {
		if t := st.State.Terminated; t != nil {
			return fmt.Sprintf("%s (exit %d) %s", t.Reason, t.ExitCode, oneLine(t.Message))
		}
	}
	if pod.Status.Message != "" {
		return oneLine(pod.Status.Message)
	}
	return pod.Status.Reason
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// deletePod deletes the proxy pod with a fresh context, so that it runs even after ctx was
// cancelled by a signal. A pod that is already gone is not an error.
func deletePod(cs Clientset, ns, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// waitPodReady watches the pod until its Ready condition is true.
func waitPodReady(ctx context.Context, cs Clientset, ns, name string) error {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	ready := func(p *corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	}
	for {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return errors.New("the pod is gone")
		}
		if ready(&list.Items[0]) {
			return nil
		}
		w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			return err
		}
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && ready(p) {
				w.Stop()
				return nil
			}
			if ev.Type == watch.Deleted {
				w.Stop()
				return errors.New("the pod was deleted")
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
