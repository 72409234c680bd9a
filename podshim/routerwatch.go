package podshim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"
)

// Intercept annotations and label on a Service (the same names as session's).
const (
	annInterceptSelector = "kubectl-tp.io/intercept-selector"
	annInterceptRouter   = "kubectl-tp.io/intercept-router"
	labelRouter          = "kubectl-tp.io/router"
)

// RouterWatch ends an intercept router nobody uses: once the router has had no registration for
// Grace (StartGrace while none has come yet), it gives the Service its own selector back (from
// the annotation the first session recorded, in one update carrying the resourceVersion it read)
// and deletes the router's ServiceAccount, which owns the router pod, its Role and RoleBinding and
// the shadow Service. So an intercept whose sessions all died (kill -9, laptops gone) leaves the
// Service as it was with no command run by anyone. It runs in the router pod beside Serve, with
// that ServiceAccount's credentials, whose Role names only that Service and that ServiceAccount.
//
// It leaves out everything but these Kubernetes REST calls, spoken as plain JSON over HTTPS, and
// a Service that is no longer intercepted by this router (then it only retires).
type RouterWatch struct {
	// API is the API server's base URL (https://host:port); Client carries the CA; Token is the
	// ServiceAccount's bearer token.
	API    string
	Client *http.Client
	Token  string
	// Namespace and Service name the intercepted Service; ServiceAccount is the router's own.
	Namespace, Service, ServiceAccount string
	// Grace is how long the router may go without a registration once it had one (default
	// 10 s); StartGrace before the first (default 2 min).
	Grace, StartGrace time.Duration
	// Status reads the router's registrations (Server.RouterStatus); Retire decides to give the
	// Service back, refusing later registrations, if none is left (Server.RetireRouter).
	Status func() (RouterStatus, bool)
	Retire func() bool
	// Drain is how long the router keeps serving (every request to the real pods) after it
	// restored the Service, while the EndpointSlices and kube-proxy move the Service's traffic
	// back to the pods (default 5 s); then it retires.
	Drain time.Duration
	// Logf logs each state change; nil means no logging.
	Logf logger.Logf
}

// Run watches until the router is retired (nil) or ctx is done.
func (r *RouterWatch) Run(ctx context.Context) error {
	grace, start := r.Grace, r.StartGrace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	if start <= 0 {
		start = 2 * time.Minute
	}
	had := false
	for {
		st, ok := r.Status()
		var changed <-chan struct{}
		if ok {
			changed = st.Changed
			if len(st.Intercepts) > 0 {
				had = true
			}
			limit := start
			if had {
				limit = grace
			}
			if !st.Retiring && len(st.Intercepts) == 0 && st.IdleFor >= limit && r.Retire() {
				r.logf("router: no intercept for %s", st.IdleFor.Round(time.Second))
				st.Retiring = true
			}
			if st.Retiring {
				r.logf("router: restoring service/%s", r.Service)
				if err := r.restore(ctx); err != nil {
					r.logf("router: %v", err)
				} else {
					drain := r.Drain
					if drain <= 0 {
						drain = 5 * time.Second
					}
					// Make before break: requests kube-proxy still sends here reach the pods.
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(drain):
					}
					return r.dog().retire(ctx)
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// restore gives the Service its own selector back, if this router still has it.
func (r *RouterWatch) restore(ctx context.Context) error {
	w := r.dog()
	path := "/api/v1/namespaces/" + url.PathEscape(r.Namespace) + "/services/" + url.PathEscape(r.Service)
	for attempt := 0; ; attempt++ {
		svc, err := w.get(ctx, path)
		if errors.Is(err, errNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ann := annotations(svc)
		raw, _ := ann[annInterceptSelector].(string)
		if raw == "" {
			r.logf("router: service/%s is no longer intercepted", r.Service)
			return nil
		}
		var own map[string]any
		if err := json.Unmarshal([]byte(raw), &own); err != nil || len(own) == 0 {
			return fmt.Errorf("service/%s: its %s annotation is not a selector (%q)", r.Service, annInterceptSelector, raw)
		}
		spec, _ := svc["spec"].(map[string]any)
		if spec == nil {
			return fmt.Errorf("service/%s has no spec", r.Service)
		}
		// Someone else changed the selector meanwhile: theirs stays, only our record goes.
		if sel, _ := spec["selector"].(map[string]any); len(sel) == 1 && sel[labelRouter] == r.Service {
			spec["selector"] = own
		} else {
			r.logf("router: service/%s selects %v now, not this router; its selector is left as it is", r.Service, sel)
		}
		delete(ann, annInterceptSelector)
		delete(ann, annInterceptRouter)
		if len(ann) == 0 {
			meta, _ := svc["metadata"].(map[string]any)
			delete(meta, "annotations")
		}
		err = w.do(ctx, http.MethodPut, path, svc, nil)
		if err == nil {
			r.logf("router: service/%s restored", r.Service)
			return nil
		}
		if attempt == 4 {
			return fmt.Errorf("restoring service/%s: %w", r.Service, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// dog is a Watchdog carrying RouterWatch's credentials, for its REST calls.
func (r *RouterWatch) dog() *Watchdog {
	return &Watchdog{API: r.API, Client: r.Client, Token: r.Token, Namespace: r.Namespace, ServiceAccount: r.ServiceAccount}
}

func (r *RouterWatch) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}
