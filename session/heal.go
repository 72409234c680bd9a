package session

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// Back-off between reconnection attempts while the tunnel is down.
const (
	retryFirst = 200 * time.Millisecond
	retryMax   = 5 * time.Second
)

// heartbeat keeps podshim alive and the port-forward connection warm. When the tunnel breaks it
// says so once, retries with back-off (silently; -v shows each attempt) and says when it is back.
// When the proxy pod itself is gone (deleted, evicted, failed, ended) it starts a replacement with
// the same spec; when no replacement can be made the session ends (see [Session.Lost]).
func (s *Session) heartbeat(ctx context.Context) {
	defer s.wg.Done()
	var down time.Time // when the tunnel was lost; zero while it is up
	delay := retryFirst
	for ctx.Err() == nil {
		err := s.client.Heartbeat(ctx, s.opts.Heartbeat)
		if ctx.Err() != nil {
			return
		}
		if down.IsZero() && time.Since(time.Unix(0, s.retargeted.Load())) < 2*time.Second {
			// The tunnel was moved to a replacement pod a moment ago: not a loss.
			s.verbosef("heartbeat moved to the replacement pod: %s", oneLine(fmt.Sprint(err)))
			continue
		}
		if down.IsZero() {
			down = time.Now()
			s.logf("tunnel lost (%s); reconnecting", oneLine(fmt.Sprint(err)))
		} else {
			s.verbosef("tunnel still down: %s", oneLine(fmt.Sprint(err)))
		}
		if name, why := s.podGone(ctx); why != "" {
			if err := s.heal(ctx, name, why, down); err != nil {
				if ctx.Err() == nil { // not merely the session closing
					s.end(err)
				}
				return
			}
			delay = retryFirst
		} else {
			s.path.fwd.Reset()
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, retryMax)
		}
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = s.client.Hello(hctx)
		cancel()
		if err == nil {
			s.logf("reconnected after %.1fs", time.Since(down).Seconds())
			down, delay = time.Time{}, retryFirst
		}
	}
}

// podGone returns the current proxy pod and says why it can no longer serve ("" while it may:
// running, or not known because the API server cannot be reached).
func (s *Session) podGone(ctx context.Context) (string, string) {
	name := s.currentPod()
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := s.opts.Client.CoreV1().Pods(s.opts.Namespace).Get(gctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return name, "was deleted"
	}
	if err != nil {
		s.verbosef("checking proxy pod %s: %v", name, err)
		return name, ""
	}
	return name, lostReason(p)
}

// lostReason says why pod can no longer serve, or "".
func lostReason(p *corev1.Pod) string {
	switch {
	case p.DeletionTimestamp != nil:
		return "is being deleted"
	case p.Status.Phase == corev1.PodFailed:
		if p.Status.Reason != "" {
			return "failed (" + p.Status.Reason + ")"
		}
		return "failed"
	case p.Status.Phase == corev1.PodSucceeded:
		return "ended (it had not heard from this session for --idle-timeout)"
	}
	return ""
}

// watchPod replaces the proxy pod as soon as the API server says it is going (marked for
// deletion, evicted, failed), while it may still serve: make before break. The heartbeat covers
// what a watch cannot see (a node gone silent, the API server unreachable).
func (s *Session) watchPod(ctx context.Context) {
	defer s.wg.Done()
	for ctx.Err() == nil {
		name := s.currentPod()
		sel := fields.OneTermEqualSelector("metadata.name", name).String()
		w, err := s.opts.Client.CoreV1().Pods(s.opts.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			s.verbosef("watching proxy pod %s: %v", name, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryMax):
			}
			continue
		}
		why := ""
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				why = "was deleted"
			} else if p, ok := ev.Object.(*corev1.Pod); ok {
				why = lostReason(p)
			}
			if why != "" {
				break
			}
		}
		w.Stop()
		if why == "" || ctx.Err() != nil {
			continue // the watch ended (time-out, compaction): watch again
		}
		if err := s.heal(ctx, name, why, time.Now()); err != nil {
			if ctx.Err() == nil { // not merely the session closing
				s.end(err)
			}
			return
		}
	}
}

// heal replaces pod name unless that was done already (the watch and the heartbeat may both see
// the same loss).
func (s *Session) heal(ctx context.Context, name, why string, down time.Time) error {
	s.healMu.Lock()
	defer s.healMu.Unlock()
	if s.currentPod() != name || ctx.Err() != nil {
		return nil
	}
	return s.replacePod(ctx, why, down)
}

// replacePod starts a new proxy pod like the lost one, waits until it runs, points the tunnel at
// it and, for a swap, moves the Deployment's record to it. down is when the tunnel was lost.
func (s *Session) replacePod(ctx context.Context, why string, down time.Time) error {
	old := s.currentPod()
	if s.swapped != "" {
		// A laptop that went silent for longer than --idle-timeout (asleep, offline) finds its swap
		// restored by the watchdog: the cluster serves again, and a new proxy pod must not take
		// the traffic back behind the team's back. The session ends; the user may swap again.
		gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		d, err := s.opts.Client.AppsV1().Deployments(s.opts.Namespace).Get(gctx, s.swapped, metav1.GetOptions{})
		cancel()
		if err == nil {
			if info, ok := swapInfo(d); !ok || info.Session != s.ID {
				return fmt.Errorf("proxy pod %s %s, and deployment/%s was restored meanwhile (by its watchdog or kubectl tp cleanup); run the command again to swap it again", old, why, s.swapped)
			}
		}
	}
	s.podSeq++
	name := fmt.Sprintf("tp-%s-%d", s.ID, s.podSeq)
	s.logf("proxy pod %s %s; starting %s", old, why, name)
	pod := s.podTemplate.DeepCopy()
	pod.Name = name
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := s.opts.Client.CoreV1().Pods(s.opts.Namespace).Create(cctx, pod, createOptions)
	cancel()
	if err != nil {
		return fmt.Errorf("proxy pod %s %s and no replacement can be created: %w", old, why, cleanAPIError(err))
	}
	s.setPod(name)
	// The lost pod may linger (Failed, Succeeded): it serves nobody now.
	go func() { _ = deletePod(s.opts.Client, s.opts.Namespace, old) }()
	sctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	running, err := waitReady(sctx, s.opts.Client, s.opts.Namespace, name, func(string) {})
	if err != nil {
		return fmt.Errorf("replacement proxy pod %s did not start: %w", name, err)
	}
	s.retargeted.Store(time.Now().UnixNano())
	s.path.direct.Store(nil) // it led to the lost pod
	s.path.fwd.Retarget(name)
	if s.mux != nil {
		// Every carrier led to the lost pod: the port-forward ones end with Retarget, but a
		// direct one to a pod IP that vanished would only time out. New streams must not wait
		// on them.
		s.mux.Redial()
	}
	if s.tryDirect(sctx, running.Status.PodIP) {
		s.verbosef("%s", s.pathDescription())
	}
	if s.swapped != "" {
		if err := s.moveSwap(ctx, name); err != nil {
			return err
		}
	}
	s.logf("new proxy pod %s serves the session, %.1fs after the loss", name, time.Since(down).Seconds())
	return nil
}

// moveSwap points the Deployment's swap record at the replacement pod, so that status and cleanup
// see the session alive.
func (s *Session) moveSwap(ctx context.Context, pod string) error {
	deps := s.opts.Client.AppsV1().Deployments(s.opts.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deps.Get(ctx, s.swapped, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("recording the replacement pod on deployment/%s: %w", s.swapped, err)
		}
		if info, ok := swapInfo(d); !ok || info.Session != s.ID {
			return fmt.Errorf("deployment/%s is no longer swapped by this session (restored by someone else)", s.swapped)
		}
		d.Annotations[AnnotationSwapPod] = pod
		_, err = deps.Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-tp"})
		return err
	})
}

// end stops the session for good: the reason is printed once and the child is asked to stop.
func (s *Session) end(err error) {
	s.endOnce.Do(func() {
		s.lostErr = err
		s.logf("%v; ending the session", err)
		close(s.lost)
	})
}

// Lost is closed when the session cannot go on (its proxy pod is gone and cannot be replaced);
// [Session.LostErr] then says why. Run stops the child when it is closed.
func (s *Session) Lost() <-chan struct{} { return s.lost }

// LostErr is why the session was lost, or nil.
func (s *Session) LostErr() error {
	select {
	case <-s.lost:
		return s.lostErr
	default:
		return nil
	}
}

func (s *Session) currentPod() string {
	s.podMu.Lock()
	defer s.podMu.Unlock()
	return s.PodName
}

func (s *Session) setPod(name string) {
	s.podMu.Lock()
	s.PodName = name
	s.podMu.Unlock()
}

// logf prints one line about the session's state to Stderr.
func (s *Session) logf(format string, args ...any) {
	fmt.Fprintf(s.opts.Stderr, "kubectl-tp: "+format+"\n", args...)
}
