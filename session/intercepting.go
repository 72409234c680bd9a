package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubectl-tp/kubectl-tp/forward"
	"github.com/kubectl-tp/kubectl-tp/intercept"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InterceptPermissions are what --intercept needs besides RunPermissions and the workload's
// read: read and switch the Service, find its pods, and create (and, as the last session, delete)
// the router's ServiceAccount, Role, RoleBinding, shadow Service and pod.
var InterceptPermissions = []Permission{
	{Verb: "get", Resource: "services"},
	{Verb: "update", Resource: "services"},
	{Verb: "create", Resource: "services"},
	{Verb: "list", Resource: "pods"},
	{Verb: "create", Resource: "serviceaccounts"},
	{Verb: "get", Resource: "serviceaccounts"},
	{Verb: "delete", Resource: "serviceaccounts"},
	{Verb: "create", Resource: "roles"},
	{Verb: "create", Resource: "rolebindings"},
}

// AnnotationIntercept records, on a session's proxy pod, what the session intercepts (status).
const AnnotationIntercept = "kubectl-tp.io/intercept"

// intercepting is a session's intercept of one Service, once it runs: its own tunnel to the
// router pod and the registration.
type intercepting struct {
	plan   *interceptPlan
	router string
	// path is the way to the router: its own port-forward, and the direct path while it works.
	path   *podPath
	mux    *tunnel.Mux
	client *tunnel.Client
	f      *intercept.Forwarder
	// ports maps each taken target port to its local port.
	ports map[int]int
	// running is set once f.Run runs; done is closed when it returns.
	running bool
	done    chan struct{}
}

// planInterceptFor checks the permissions --intercept needs, reads the Service and sets what the
// session stands in for (the Service's workload, unless --from chose one) and which local port
// each taken target port goes to (the same number, unless --expose LOCAL:TARGET remaps it; such
// an --expose is not a port of the proxy pod).
func (s *Session) planInterceptFor(ctx context.Context, p *progress) error {
	spec := s.opts.Intercept
	p.set("reading service/" + spec.Service)
	if err := Preflight(ctx, s.opts.Client, s.opts.Namespace, InterceptPermissions); err != nil {
		return err
	}
	plan, err := planIntercept(ctx, s.opts.Client, s.opts.Namespace, *spec)
	if err != nil {
		return err
	}
	if s.opts.From == nil {
		s.opts.From = &plan.workload
	}
	s.intercept = &intercepting{plan: plan, ports: map[int]int{}, done: make(chan struct{})}
	for _, t := range plan.taken {
		s.intercept.ports[t] = t
	}
	var rest []PortMap
	for _, pm := range s.opts.Expose {
		if _, taken := s.intercept.ports[pm.Remote]; taken {
			s.intercept.ports[pm.Remote] = pm.Local
			continue
		}
		rest = append(rest, pm)
	}
	s.opts.Expose = rest
	return nil
}

// startIntercept starts (or joins) the Service's router, reaches it through a port-forward of
// its own, registers the intercept, and only then points the Service at the router (a router
// with a registration does not retire, so the Service never selects a router that goes away).
// Until the child listens on a local port, the router sends that port's matching requests to the
// real pods (the hand-over is refused locally).
func (s *Session) startIntercept(startCtx context.Context, p *progress) error {
	in, opts := s.intercept, s.opts
	for attempt := 0; ; attempt++ {
		p.set("starting the router of service/" + in.plan.service)
		router, err := ensureRouter(startCtx, opts.Client, in.plan, opts.Image, s.ID, s.logf)
		if err != nil {
			return err
		}
		in.router = router.name
		in.path = &podPath{
			fwd:  &forward.Forwarder{Config: opts.Config, Namespace: opts.Namespace, Pod: router.name, Port: TunnelPort},
			what: "the intercept of service/" + in.plan.service, logf: s.logf, verbosef: s.verbosef,
		}
		in.mux = &tunnel.Mux{Carrier: in.path.carrier, Token: router.token, Carriers: 1}
		in.client = &tunnel.Client{Open: in.mux.Open, Token: router.token}
		if opts.Direct {
			// Before the registration, whose stream stays open on the carrier it starts on.
			in.path.try(startCtx, in.client, in.mux, router.ip)
		}
		in.f = &intercept.Forwarder{Client: in.client, Match: opts.Intercept.Headers, Owner: owner(), Ports: in.ports, Logf: s.logf}
		p.set("registering the intercept of service/" + in.plan.service)
		err = in.f.Start(startCtx)
		if err == nil {
			break
		}
		in.f = nil
		_ = in.mux.Close()
		_ = in.path.fwd.Close()
		var re *tunnel.RemoteError
		if !errors.As(err, &re) || re.Code != tunnel.CodeRetiring || attempt == 3 {
			return fmt.Errorf("intercepting service/%s: %w", in.plan.service, err)
		}
		// The router is giving the Service back: wait until it is gone, then start another.
		p.set("waiting for the old router of service/" + in.plan.service + " to go")
		if err := waitRouterGone(startCtx, opts.Client, opts.Namespace, in.plan.service); err != nil {
			return err
		}
	}
	s.wg.Add(1)
	in.running = true
	go func() {
		defer s.wg.Done()
		defer close(in.done)
		_ = in.f.Run(s.runCtx)
	}()
	p.set("pointing service/" + in.plan.service + " at its router")
	if err := pointAtRouter(startCtx, opts.Client, in.plan); err != nil {
		return err
	}
	if w := waitEndpoints(startCtx, opts.Client, opts.Namespace, in.router, []string{in.plan.service}, "the router as its endpoint", func(st endpointState) bool { return st.podReady }); w != "" {
		s.logf("warning: %s", w)
	}
	return nil
}

// waitRouterGone waits until the router of Service svc (its ServiceAccount) is gone.
func waitRouterGone(ctx context.Context, cs Clientset, ns, svc string) error {
	for {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, routerName(svc), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the old router of service/%s did not go in time; run the command again", svc)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// describeIntercept is the start-up line's account of the intercept.
func (s *Session) describeIntercept() string {
	in := s.intercept
	if in == nil || in.f == nil {
		return ""
	}
	var ports []string
	for _, t := range slices.Sorted(func(yield func(int) bool) {
		for t := range in.ports {
			if !yield(t) {
				return
			}
		}
	}) {
		ports = append(ports, strconv.Itoa(t)+"→localhost:"+strconv.Itoa(in.ports[t]))
	}
	what := "every request"
	if h := s.opts.Intercept.Headers; len(h) > 0 {
		what = "requests with " + strings.Join(h, ", ")
	}
	return fmt.Sprintf("service/%s: %s come here (%s); to the router: %s", in.plan.service, what, strings.Join(ports, ", "), in.path.describe())
}

// closeIntercept gives the intercept up. The last session of the Service asks the router to
// retire: the router, which then refuses new registrations, restores the Service and removes
// itself; the session waits for that (and does it itself if the router cannot). Errors are
// returned for Close to report.
func (s *Session) closeIntercept() error {
	in := s.intercept
	if in == nil || in.router == "" {
		return nil
	}
	if in.f != nil {
		_ = in.f.Close()
		if in.running {
			select {
			case <-in.done:
			case <-time.After(5 * time.Second):
			}
		}
	}
	defer func() {
		if in.mux != nil {
			_ = in.mux.Close()
		}
		if in.path != nil {
			_ = in.path.fwd.Close()
		}
	}()
	if in.f == nil {
		return nil // not registered: nothing of ours to give back
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ns, svc := s.opts.Namespace, in.plan.service
	retired, err := false, error(nil)
	// Our own registration's end may reach the router just after the first ask.
	for range 5 {
		if retired, err = in.client.RetireRouter(ctx); retired || err != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !retired && err == nil {
		return nil // other intercepts live on
	}
	if err == nil {
		// The router restores the Service and deletes itself; wait for the Service.
		for ctx.Err() == nil {
			got, gerr := s.opts.Client.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
			if gerr == nil {
				if _, still := got.Annotations[AnnotationInterceptSelector]; !still {
					s.logf("service/%s restored (no intercept left)", svc)
					return nil
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The router cannot say or did not act: if it is gone or retiring, do it here.
	if pod, perr := s.opts.Client.CoreV1().Pods(ns).Get(context.Background(), in.router, metav1.GetOptions{}); err != nil && perr == nil && PodAlive(pod) {
		return nil // alive but unreachable from here: it restores the Service once idle
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	changed, rerr := restoreService(rctx, s.opts.Client, ns, svc)
	if rerr != nil {
		return fmt.Errorf("restoring service/%s: %w (run: kubectl tp cleanup -n %s)", svc, cleanAPIError(rerr), ns)
	}
	if changed {
		s.logf("service/%s restored (no intercept left)", svc)
	}
	return deleteRouter(s.opts.Client, ns, svc)
}

// CleanupIntercepts gives back the Services of ns ("" = every namespace) that point at a router
// while no live session intercepts them (their sessions died and the router could not restore
// them itself), and removes those routers. It returns one line per intercepted Service for the
// user: restored, or left alone with the live sessions.
func CleanupIntercepts(ctx context.Context, cs Clientset, ns string) ([]string, error) {
	svcs, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing Services: %w", cleanAPIError(err))
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return nil, fmt.Errorf("listing proxy pods: %w", cleanAPIError(err))
	}
	live := map[string][]string{} // ns/service → sessions
	for i := range pods.Items {
		p := &pods.Items[i]
		if spec := p.Annotations[AnnotationIntercept]; spec != "" && PodAlive(p) {
			svc, _, _ := strings.Cut(spec, ",")
			svc, _, _ = strings.Cut(svc, ":")
			live[p.Namespace+"/"+svc] = append(live[p.Namespace+"/"+svc], p.Labels[LabelSession])
		}
	}
	var out []string
	for _, s := range svcs.Items {
		if _, ok := s.Annotations[AnnotationInterceptSelector]; !ok {
			continue
		}
		if sessions := live[s.Namespace+"/"+s.Name]; len(sessions) > 0 {
			out = append(out, fmt.Sprintf("service/%s in %s: intercepted by live session(s) %s; left alone", s.Name, s.Namespace, strings.Join(sessions, ", ")))
			continue
		}
		if _, err := restoreService(ctx, cs, s.Namespace, s.Name); err != nil {
			return out, fmt.Errorf("restoring service/%s in %s: %w", s.Name, s.Namespace, cleanAPIError(err))
		}
		if err := deleteRouter(cs, s.Namespace, s.Name); err != nil {
			return out, fmt.Errorf("removing the router of service/%s in %s: %w", s.Name, s.Namespace, cleanAPIError(err))
		}
		out = append(out, fmt.Sprintf("service/%s in %s: its own selector restored and its router removed (no live intercept)", s.Name, s.Namespace))
	}
	return out, nil
}
