package podshim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"
)

// Swap annotations on a Deployment (the same names as session's; podshim imports no k8s.io or
// session package).
const (
	annSwapSession  = "kubectl-tp.io/swap-session"
	annSwapPod      = "kubectl-tp.io/swap-pod"
	annSwapReplicas = "kubectl-tp.io/swap-replicas"
	annSwapOwner    = "kubectl-tp.io/swap-owner"
	annSwapStarted  = "kubectl-tp.io/swap-started"
)

// Watchdog restores a swapped Deployment when the session that swapped it has gone silent: it
// runs in its own pod, with a ServiceAccount whose Role names only that Deployment, the session's
// proxy pods (read, and delete the ended one) and the ServiceAccount itself. Every Interval it reads the Deployment; while the swap
// recorded there is Session's, it reads the proxy pod the record names. Once that pod has not
// served (gone, being deleted, ended: podshim ends after its idle timeout without the laptop) for
// Grace, the Watchdog scales the Deployment back to the recorded replica count and removes the
// swap record in one update carrying the resourceVersion it read, so it never overwrites a change
// it has not seen. Then, or as soon as the swap is no longer Session's, it deletes its
// ServiceAccount; the garbage collector removes the Role, RoleBinding and its own pod, which the
// ServiceAccount owns.
//
// A session that heals its proxy pod moves the record to the replacement within a second or two,
// so Grace keeps the Watchdog from restoring under a live session. It leaves out everything but
// the Kubernetes REST calls it needs, spoken as plain JSON over HTTPS.
type Watchdog struct {
	// API is the API server's base URL (https://host:port).
	API string
	// Client sends the requests; it carries the CA. Token is the ServiceAccount's bearer token.
	Client *http.Client
	Token  string
	// Namespace, Deployment and Session name the swap to guard; ServiceAccount is the watchdog's
	// own, deleted at the end.
	Namespace, Deployment, Session, ServiceAccount string
	// Grace is how long the proxy pod must have been gone before the restore (default 10 s).
	Grace time.Duration
	// Interval is the time between checks (default 2 s).
	Interval time.Duration
	// Logf logs each state change; nil means no logging.
	Logf logger.Logf
}

// errNotFound is returned for a 404 answer.
var errNotFound = errors.New("not found")

// Run guards the swap until it is restored (by the Watchdog or anyone else) or ctx is done.
func (w *Watchdog) Run(ctx context.Context) error {
	grace, interval := w.Grace, w.Interval
	if grace <= 0 {
		grace = 10 * time.Second
	}
	if interval <= 0 {
		interval = 2 * time.Second
	}
	var goneSince time.Time
	for {
		done, err := w.check(ctx, &goneSince, grace)
		if err != nil {
			w.logf("watchdog: %v", err)
		}
		if done {
			return w.retire(ctx)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// check runs one round; done means there is nothing left to guard.
func (w *Watchdog) check(ctx context.Context, goneSince *time.Time, grace time.Duration) (bool, error) {
	dep, err := w.get(ctx, w.deploymentPath())
	if errors.Is(err, errNotFound) {
		w.logf("watchdog: deployment/%s is gone; nothing to guard", w.Deployment)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	ann := annotations(dep)
	if owner, _ := ann[annSwapSession].(string); owner != w.Session {
		w.logf("watchdog: deployment/%s is no longer swapped by session %s", w.Deployment, w.Session)
		return true, nil
	}
	pod, _ := ann[annSwapPod].(string)
	alive, err := w.podAlive(ctx, pod)
	if err != nil {
		return false, err
	}
	if alive {
		if !goneSince.IsZero() {
			w.logf("watchdog: proxy pod %s serves again", pod)
		}
		*goneSince = time.Time{}
		return false, nil
	}
	if goneSince.IsZero() {
		*goneSince = time.Now()
		w.logf("watchdog: proxy pod %s does not serve; restoring deployment/%s unless it is back within %s", pod, w.Deployment, grace)
		return false, nil
	}
	if time.Since(*goneSince) < grace {
		return false, nil
	}
	recorded, _ := ann[annSwapReplicas].(string)
	replicas, err := strconv.Atoi(recorded)
	if err != nil || replicas < 0 {
		return false, fmt.Errorf("deployment/%s records no replica count (%q)", w.Deployment, ann[annSwapReplicas])
	}
	spec, _ := dep["spec"].(map[string]any)
	if spec == nil {
		return false, fmt.Errorf("deployment/%s has no spec", w.Deployment)
	}
	spec["replicas"] = replicas
	for _, k := range []string{annSwapSession, annSwapPod, annSwapReplicas, annSwapOwner, annSwapStarted} {
		delete(ann, k)
	}
	// dep carries the resourceVersion read above: a concurrent change makes this a 409, and the
	// next round reads again.
	if err := w.do(ctx, http.MethodPut, w.deploymentPath(), dep, nil); err != nil {
		return false, fmt.Errorf("restoring deployment/%s: %w", w.Deployment, err)
	}
	w.logf("watchdog: session %s went silent; deployment/%s restored to %d replicas", w.Session, w.Deployment, replicas)
	// The ended proxy pod serves nobody; remove it, as the session would have.
	if err := w.do(ctx, http.MethodDelete, w.podPath(pod), nil, nil); err != nil && !errors.Is(err, errNotFound) {
		w.logf("watchdog: deleting proxy pod %s: %v", pod, err)
	}
	return true, nil
}

// podAlive reports whether the proxy pod exists, is not being deleted and has not ended.
func (w *Watchdog) podAlive(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, nil
	}
	p, err := w.get(ctx, w.podPath(name))
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	meta, _ := p["metadata"].(map[string]any)
	if meta["deletionTimestamp"] != nil {
		return false, nil
	}
	status, _ := p["status"].(map[string]any)
	phase, _ := status["phase"].(string)
	return phase == "Pending" || phase == "Running", nil
}

// retire deletes the watchdog's ServiceAccount (and so, by garbage collection, everything else
// of the watchdog's, its pod included) and waits to be stopped.
func (w *Watchdog) retire(ctx context.Context) error {
	path := "/api/v1/namespaces/" + url.PathEscape(w.Namespace) + "/serviceaccounts/" + url.PathEscape(w.ServiceAccount)
	body := map[string]any{"propagationPolicy": "Background"}
	for attempt := 0; ; attempt++ {
		err := w.do(ctx, http.MethodDelete, path, body, nil)
		if err == nil || errors.Is(err, errNotFound) {
			return nil
		}
		if attempt == 4 {
			return fmt.Errorf("deleting serviceaccount/%s: %w", w.ServiceAccount, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (w *Watchdog) podPath(name string) string {
	return "/api/v1/namespaces/" + url.PathEscape(w.Namespace) + "/pods/" + url.PathEscape(name)
}

func (w *Watchdog) deploymentPath() string {
	return "/apis/apps/v1/namespaces/" + url.PathEscape(w.Namespace) + "/deployments/" + url.PathEscape(w.Deployment)
}

func annotations(obj map[string]any) map[string]any {
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	ann, _ := meta["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	return ann
}

func (w *Watchdog) get(ctx context.Context, path string) (map[string]any, error) {
	var out map[string]any
	err := w.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// do sends one request and decodes a JSON answer into out (when not nil).
func (w *Watchdog) do(ctx context.Context, method, path string, in any, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, w.API+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.Token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := w.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNotFound
	}
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (w *Watchdog) logf(format string, args ...any) {
	if w.Logf != nil {
		w.Logf(format, args...)
	}
}
