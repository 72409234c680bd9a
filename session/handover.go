package session

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// The swap window. Traffic moves between the Deployment's pods and the proxy pod through the
// Services that select them, and a Service moves it only once the EndpointSlice controller has
// listed (or dropped) a pod and kube-proxy has applied that on every node. So each switch is made
// before the break, and waits for the EndpointSlices, not just for pod readiness:
//
//   - start: the proxy pod is created outside the Services (without the template's labels). Once
//     the child listens on the exposed local ports, it gets the labels, and only when it is a
//     ready endpoint of every Service that selects it is the Deployment scaled to 0;
//   - end on a signal (Ctrl-C, SIGTERM, SIGHUP): the Deployment is scaled back up and its pods are
//     ready endpoints again, then the proxy pod is taken out of the Services (its selector labels
//     removed) and dropped from their EndpointSlices, and only then does the child get the signal;
//   - end because the child exited by itself: nothing local serves any more, so the Deployment is
//     restored at once; requests in the seconds its pods take to start fail.
//
// What is left out: the Deployment's own pods. When they stop on SIGTERM at once (no preStop hook,
// no drain), requests that kube-proxy still sends them fail until it drops them; swapWarning tells
// the user at start. Reading Services and EndpointSlices needs list permission on both; without it
// each wait becomes a fixed pause (endpointPause).

// kubeProxySettle is how long after an EndpointSlice change kube-proxy may take to apply it (its
// default minSyncPeriod is 1 s).
const kubeProxySettle = time.Second

// endpointPause replaces an EndpointSlice wait that the user's permissions do not allow.
const endpointPause = 3 * time.Second

// endpointWait bounds each EndpointSlice wait; past it the switch goes ahead, with a warning.
const endpointWait = 60 * time.Second

// selectingServices returns the names of the Services of ns whose selector matches podLabels.
func selectingServices(ctx context.Context, cs Clientset, ns string, podLabels map[string]string) ([]string, error) {
	list, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, svc := range list.Items {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
			names = append(names, svc.Name)
		}
	}
	return names, nil
}

// endpointState is what the EndpointSlices of one Service say about the proxy pod and the others.
type endpointState struct {
	// pod is whether the proxy pod is listed; podReady whether it is listed as ready.
	pod, podReady bool
	// others counts the ready endpoints of other pods.
	others int
}

// serviceEndpoints reads the EndpointSlices of Service ns/svc as seen from pod.
func serviceEndpoints(ctx context.Context, cs Clientset, ns, svc, pod string) (endpointState, error) {
	list, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return endpointState{}, err
	}
	var st endpointState
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && ep.TargetRef.Name == pod {
				st.pod = true
				st.podReady = st.podReady || ready
			} else if ready {
				st.others++
			}
		}
	}
	return st, nil
}

// waitEndpoints waits until cond holds for every Service in svcs (at most endpointWait), then
// for kube-proxy to apply it. It returns a description of what it could not see, for a warning, or
// "" when all went as expected.
func waitEndpoints(ctx context.Context, cs Clientset, ns, pod string, svcs []string, what string, cond func(endpointState) bool) string {
	ctx, cancel := context.WithTimeout(ctx, endpointWait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	pending := svcs
	for {
		var still []string
		for _, svc := range pending {
			st, err := serviceEndpoints(ctx, cs, ns, svc, pod)
			if apierrors.IsForbidden(err) {
				pause(ctx, endpointPause)
				return ""
			}
			if err != nil || !cond(st) {
				still = append(still, svc)
			}
		}
		if pending = still; len(pending) == 0 {
			pause(ctx, kubeProxySettle)
			return ""
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("Service %s: %s not seen within %s", strings.Join(pending, ", "), what, endpointWait)
		case <-tick.C:
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// servicesOf lists the Services that select pod, or nil (with a -v note) when they cannot be read.
func (s *Session) servicesOf(ctx context.Context, podLabels map[string]string) ([]string, bool) {
	svcs, err := selectingServices(ctx, s.opts.Client, s.opts.Namespace, podLabels)
	if err != nil {
		s.verbosef("cannot list Services (%v): pausing %s instead of watching EndpointSlices", oneLine(err.Error()), endpointPause)
		pause(ctx, endpointPause)
		return nil, false
	}
	return svcs, true
}

// localWait bounds how long SwitchTraffic waits for the child to listen on the exposed local ports
// (after the first one answers, the others get localRestWait more).
const (
	localWait     = time.Minute
	localRestWait = 10 * time.Second
)

// SwitchTraffic moves a swapped Deployment's traffic to the proxy pod once the child is ready for
// it: it waits until the child accepts connections on the exposed local ports, puts the proxy pod
// into the Services (the template's labels), waits until it is their ready endpoint, starts the
// watchdog and scales the Deployment to 0. A failure ends the session (Lost). Run calls it once the
// child starts; it returns early when the session closes.
func (s *Session) SwitchTraffic() {
	ctx := s.runCtx
	if s.swapped == "" || ctx == nil {
		return
	}
	s.waitListening(ctx)
	pod := s.currentPod()
	if err := s.relabel(ctx, pod); err != nil {
		if ctx.Err() == nil {
			s.end(fmt.Errorf("putting proxy pod %s into the Services of deployment/%s: %w", pod, s.swapped, cleanAPIError(err)))
		}
		return
	}
	if svcs, ok := s.servicesOf(ctx, s.podTemplate.Labels); ok {
		if w := waitEndpoints(ctx, s.opts.Client, s.opts.Namespace, pod, svcs, "proxy pod "+pod+" as a ready endpoint",
			func(st endpointState) bool { return st.podReady }); w != "" {
			fmt.Fprintf(s.opts.Stderr, "kubectl-tp: warning: %s; scaling down anyway\n", w)
		}
	}
	if ctx.Err() != nil {
		return
	}
	s.startWatchdog(ctx)
	if err := scaleDown(ctx, s.opts.Client, s.opts.Namespace, s.swapped, s.ID); err != nil {
		if ctx.Err() == nil {
			s.end(fmt.Errorf("scaling deployment/%s to 0: %w", s.swapped, err))
		}
		return
	}
	s.logf("deployment/%s scaled to 0: its traffic comes to this machine", s.swapped)
}

// waitListening waits until the child accepts connections on every exposed local port, or
// localRestWait after the first one does, or localWait in all; it warns about ports still closed.
func (s *Session) waitListening(ctx context.Context) {
	if len(s.Exposed) == 0 {
		return
	}
	start := time.Now()
	var first time.Time
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var closed []string
		for _, pm := range s.Exposed {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pm.Local)), time.Second)
			if err != nil {
				closed = append(closed, strconv.Itoa(pm.Local))
				continue
			}
			_ = c.Close()
		}
		if len(closed) == 0 {
			return
		}
		if time.Since(start) < 100*time.Millisecond {
			s.verbosef("waiting for the command to listen on local port %s before moving deployment/%s's traffic", strings.Join(closed, ", "), s.swapped)
		}
		if first.IsZero() && len(closed) < len(s.Exposed) {
			first = time.Now()
		}
		if (!first.IsZero() && time.Since(first) > localRestWait) || time.Since(start) > localWait {
			fmt.Fprintf(s.opts.Stderr, "kubectl-tp: warning: nothing listens on local port %s yet; switching deployment/%s's traffic here anyway\n", strings.Join(closed, ", "), s.swapped)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// relabel gives pod the template's labels, so that the Deployment's Services select it.
func (s *Session) relabel(ctx context.Context, pod string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": s.podTemplate.Labels}})
	if err != nil {
		return err
	}
	_, err = s.opts.Client.CoreV1().Pods(s.opts.Namespace).Patch(ctx, pod, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-tp"})
	return err
}

// ownLabels returns the labels of kubectl-tp's own among l.
func ownLabels(l map[string]string) map[string]string {
	own := map[string]string{}
	for k, v := range l {
		if k == LabelManagedBy || k == LabelSession {
			own[k] = v
		}
	}
	return own
}

// HandBack returns a swapped Deployment's traffic to the cluster while the child still serves:
// scale the Deployment back up, wait until its pods are ready endpoints of the Services, take the
// proxy pod out of them, and wait until it is dropped. The session's Close finishes the rest. It is
// a no-op for a session that swapped nothing, and safe to call once before Close.
func (s *Session) HandBack() {
	if s.swapped == "" || s.handedBack {
		return
	}
	s.handedBack = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*endpointWait)
	defer cancel()
	pod := s.currentPod()
	start := time.Now()
	fmt.Fprintf(s.opts.Stderr, "kubectl-tp: handing deployment/%s back to the cluster before stopping the command\n", s.swapped)
	restored, err := RestoreDeployment(s.opts.Client, s.opts.Namespace, s.swapped, s.ID)
	if err != nil || !restored {
		// Close reports a failed restore; nothing is handed back here.
		return
	}
	svcs, ok := s.servicesOf(ctx, s.podTemplate.Labels)
	if ok {
		if w := waitEndpoints(ctx, s.opts.Client, s.opts.Namespace, pod, svcs, "ready pods of deployment/"+s.swapped,
			func(st endpointState) bool { return st.others > 0 }); w != "" {
			fmt.Fprintf(s.opts.Stderr, "kubectl-tp: warning: %s; stopping anyway\n", w)
		}
	}
	if err := s.unlabel(ctx, pod); err != nil {
		s.verbosef("cannot take proxy pod %s out of the Services (%v): they keep sending it requests until it is deleted", pod, oneLine(err.Error()))
		return
	}
	if ok {
		if w := waitEndpoints(ctx, s.opts.Client, s.opts.Namespace, pod, svcs, "proxy pod "+pod+" dropped",
			func(st endpointState) bool { return !st.pod }); w != "" {
			fmt.Fprintf(s.opts.Stderr, "kubectl-tp: warning: %s; stopping anyway\n", w)
		}
	}
	fmt.Fprintf(s.opts.Stderr, "kubectl-tp: deployment/%s serves again (%.1fs); stopping the command\n", s.swapped, time.Since(start).Seconds())
}

// unlabel removes from pod the labels it took from the Deployment's template (the ones Services
// select on), keeping kubectl-tp's own.
func (s *Session) unlabel(ctx context.Context, pod string) error {
	drop := map[string]any{}
	own := ownLabels(s.podTemplate.Labels)
	for k := range s.podTemplate.Labels {
		if _, ok := own[k]; !ok {
			drop[k] = nil
		}
	}
	if len(drop) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": drop}})
	if err != nil {
		return err
	}
	_, err = s.opts.Client.CoreV1().Pods(s.opts.Namespace).Patch(ctx, pod, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-tp"})
	return err
}

// swapWarning says, at the start of a swap, when the Deployment's pods give the switch no time:
// no container has a preStop hook and the grace period does not matter then, since an app that
// exits at once on SIGTERM drops the requests kube-proxy still sends it.
func swapWarning(name string, spec *corev1.PodSpec) string {
	for _, c := range spec.Containers {
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			return ""
		}
	}
	return fmt.Sprintf("deployment/%s's pods have no preStop hook: if they stop serving at once on SIGTERM, requests sent to them during the switch fail; "+
		"for a clean switch give them one, e.g. lifecycle: {preStop: {sleep: {seconds: 2}}}", name)
}
