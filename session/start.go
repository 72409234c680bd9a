package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/kubectl-tp/kubectl-tp/expose"
	"github.com/kubectl-tp/kubectl-tp/forward"
	"github.com/kubectl-tp/kubectl-tp/internal/version"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Start creates the proxy pod and the laptop-side servers. On error the returned Session (if
// non-nil) must still be closed; Close is idempotent and deletes whatever was created.
//
// Its phases, in order: plan the pod (permissions, the workload's template), record a swap on
// the Deployment, create the pod, connect the tunnel, then start what runs on the laptop (the
// workload's env and volumes, the proxies, transparent mode, --expose). A swap's traffic moves
// later, once the child listens (SwitchTraffic).
func Start(ctx context.Context, opts Options) (*Session, error) {
	opts.defaults()
	p := newProgress(opts.Stderr, opts.Quiet)
	defer p.stop()

	id := randomHex(6)
	s := &Session{opts: opts, ID: id, PodName: "tp-" + id, lost: make(chan struct{})}
	if opts.Swap != nil {
		s.opts.From = opts.Swap
	}
	useTransparent, err := s.chooseMode()
	if err != nil {
		return nil, err
	}
	if opts.Intercept != nil {
		if err := s.planInterceptFor(ctx, p); err != nil {
			return nil, err
		}
	}
	token := randomHex(16)
	pod, err := s.planPod(ctx, p, token)
	if err != nil {
		return nil, err
	}
	if opts.Intercept != nil {
		pod.Annotations[AnnotationIntercept] = opts.Intercept.String()
	}
	if err := s.claimSwap(ctx, p); err != nil {
		if s.swapped == "" {
			return nil, err
		}
		return s, err
	}
	created, err := s.createPod(ctx, p, pod)
	if err != nil {
		if !s.podMade {
			return nil, err
		}
		return s, err
	}

	startCtx, cancelStart := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancelStart()
	running, hello, err := s.connect(ctx, startCtx, p, token)
	if err != nil {
		return s, err
	}
	if err := s.startLocal(startCtx, p, created, running, hello, useTransparent); err != nil {
		return s, err
	}
	if s.intercept != nil {
		if err := s.startIntercept(startCtx, p); err != nil {
			return s, err
		}
	}
	p.stop()
	s.printStartup()
	return s, nil
}

// planPod checks the permissions and builds the proxy pod: plain, or from the workload's template
// (--from, --swap-deployment), with the exposed ports. For a swap, the pod is built without the
// template's labels (s.podTemplate keeps them for SwitchTraffic).
func (s *Session) planPod(ctx context.Context, p *progress, token string) (*corev1.Pod, error) {
	opts := s.opts
	p.set("checking permissions in namespace " + opts.Namespace)
	perms := RunPermissions
	if opts.Swap != nil {
		perms = append(slices.Clone(perms), SwapPermissions...)
	} else if opts.From != nil {
		perms = append(slices.Clone(perms), opts.From.Permission())
	}
	if err := Preflight(ctx, opts.Client, opts.Namespace, perms); err != nil {
		return nil, err
	}
	spec := podSpec{
		Name: s.PodName, Namespace: opts.Namespace, SessionID: s.ID, Owner: owner(),
		Image: opts.Image, Token: token, IdleTimeout: opts.IdleTimeout, Direct: opts.Direct,
	}
	pod := buildPod(spec)
	s.Exposed = opts.Expose
	if opts.From != nil {
		p.set("reading " + opts.From.String())
		tpl, err := opts.From.Template(ctx, opts.Client, opts.Namespace)
		if err != nil {
			return nil, err
		}
		c, err := pickContainer(tpl, opts.From.Container)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", opts.From, err)
		}
		pod = podFromTemplate(spec, tpl, c, opts.From.Kind+"/"+opts.From.Name+":"+c.Name)
		if opts.Swap != nil {
			if w := swapWarning(opts.Swap.Name, &tpl.Spec); w != "" {
				fmt.Fprintf(opts.Stderr, "kubectl-tp: warning: %s\n", w)
			}
			keepLabels(pod, tpl)
			s.Exposed = exposedPorts(c, opts.Expose)
		}
	}
	exposePorts(pod, s.Exposed)
	s.podTemplate = pod.DeepCopy()
	if opts.Swap != nil {
		// Created outside the Services; SwitchTraffic adds it once the local app listens.
		pod.Labels = ownLabels(pod.Labels)
	}
	return pod, nil
}

// claimSwap records a swap on the Deployment (a no-op without --swap-deployment). On error,
// s.swapped says whether Close has a claim to undo.
func (s *Session) claimSwap(ctx context.Context, p *progress) error {
	opts := s.opts
	if opts.Swap == nil {
		return nil
	}
	if w := hpaWarning(ctx, opts.Client, opts.Namespace, opts.Swap.Name); w != "" {
		fmt.Fprintf(opts.Stderr, "kubectl-tp: warning: %s\n", w)
	}
	p.set("recording the swap on deployment/" + opts.Swap.Name)
	// Like the pod create: once sent, the claim must be known to Close, so it is not abandoned
	// half-way by a signal.
	s.swapped = opts.Swap.Name
	claimCtx, cancelClaim := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	_, err := claimDeployment(claimCtx, opts.Client, opts.Namespace, opts.Swap.Name,
		SwapInfo{Session: s.ID, Pod: s.PodName, Owner: owner(), Started: time.Now()},
		func(msg string) { fmt.Fprintf(opts.Stderr, "kubectl-tp: %s\n", msg) })
	cancelClaim()
	if err != nil {
		s.swapped = ""
		return err
	}
	return ctx.Err()
}

// createPod creates the proxy pod. On error, s.podMade says whether Close has a pod to delete; a
// swap's claim is undone at once when no pod was made.
func (s *Session) createPod(ctx context.Context, p *progress, pod *corev1.Pod) (*corev1.Pod, error) {
	opts := s.opts
	p.set("creating proxy pod " + s.PodName)
	// The create must not be abandoned half-way by a signal: we could not know whether the pod
	// exists. It gets its own bounded context; the session's ctx is checked right after.
	createCtx, cancelCreate := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	created, err := opts.Client.CoreV1().Pods(opts.Namespace).Create(createCtx, pod, createOptions)
	cancelCreate()
	if err != nil {
		if s.swapped != "" {
			_, _ = RestoreDeployment(opts.Client, opts.Namespace, s.swapped, s.ID)
			s.swapped = ""
		}
		if se, ok := err.(apierrors.APIStatus); ok && apierrors.IsNotFound(err) && se.Status().Details != nil && se.Status().Details.Kind == "namespaces" {
			return nil, fmt.Errorf("namespace %q does not exist; choose one with -n (kubectl get namespaces)", opts.Namespace)
		}
		return nil, fmt.Errorf("creating proxy pod in namespace %q: %w", opts.Namespace, cleanAPIError(err))
	}
	s.podMade = true
	return created, ctx.Err()
}

// connect waits for the proxy pod to run, connects the tunnel through the API server's
// port-forward and starts the heartbeat and the pod watch (on s.runCtx, which lives until Close).
func (s *Session) connect(ctx, startCtx context.Context, p *progress, token string) (*corev1.Pod, *tunnel.HelloInfo, error) {
	opts := s.opts
	running, err := waitReady(startCtx, opts.Client, opts.Namespace, s.PodName, p.set)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("proxy pod %s did not start within %s (kubectl describe pod -n %s %s)", s.PodName, opts.StartTimeout, opts.Namespace, s.PodName)
		}
		return nil, nil, err
	}
	p.set("connecting through port-forward")
	s.path = podPath{fwd: &forward.Forwarder{Config: opts.Config, Namespace: opts.Namespace, Pod: s.PodName, Port: TunnelPort}, what: "the tunnel", logf: s.logf, verbosef: s.verbosef}
	s.mux = &tunnel.Mux{Carrier: s.path.carrier, Token: token, Carriers: tunnelCarriers}
	s.client = &tunnel.Client{Open: s.mux.Open, Token: token}
	hello, err := s.hello(startCtx)
	if err != nil {
		return nil, hello, err
	}
	if hello.Version != version.Version {
		fmt.Fprintf(opts.Stderr, "kubectl-tp: warning: podshim in the pod is version %s, this plugin is %s; use --image %s or upgrade\n", hello.Version, version.Version, version.Image())
	}
	// Before anything keeps a stream open (heartbeat, --expose), so that moving the carriers
	// breaks nothing.
	s.tryDirect(startCtx, running.Status.PodIP)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.runCtx = cancel, runCtx
	s.wg.Add(2)
	go s.heartbeat(runCtx)
	go s.watchPod(runCtx)
	return running, hello, nil
}

// startLocal starts what runs on the laptop: the copy of the workload's env and volumes, the
// proxies and DNS server, transparent mode and --expose; for a swap it waits until the proxy pod
// is ready.
func (s *Session) startLocal(startCtx context.Context, p *progress, created, running *corev1.Pod, hello *tunnel.HelloInfo, useTransparent bool) error {
	opts, runCtx := s.opts, s.runCtx
	user, pass := randomHex(8), randomHex(16)
	s.Endpoints = Endpoints{Username: user, Password: pass, Namespace: opts.Namespace, Pod: s.PodName}
	if opts.From != nil {
		p.set("copying the environment and volumes of " + opts.From.String())
		if err := s.capture(startCtx, runCtx, created); err != nil {
			return err
		}
	}
	if err := s.serve(runCtx); err != nil {
		return err
	}
	if useTransparent {
		if err := s.startTransparent(runCtx, hello, running.Status.PodIP); err != nil {
			return err
		}
		s.planRealPaths(created)
	}
	if len(s.Exposed) > 0 {
		ports := map[int]int{}
		for _, pm := range s.Exposed {
			ports[pm.Remote] = pm.Local
		}
		p.set("exposing pod ports")
		f := &expose.Forwarder{Client: s.client, Ports: ports, Logf: s.logf}
		if err := f.Start(startCtx); err != nil {
			return fmt.Errorf("exposing pod ports: %w", err)
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); _ = f.Run(runCtx) }()
	}
	if s.swapped != "" {
		p.set("waiting for pod " + s.PodName + " to be ready")
		if err := waitPodReady(startCtx, opts.Client, opts.Namespace, s.PodName); err != nil {
			return fmt.Errorf("proxy pod %s did not become ready: %w", s.PodName, err)
		}
		// The traffic itself moves once the child listens: see SwitchTraffic.
	}
	return nil
}

// printStartup prints the session's start-up line (unless --quiet).
func (s *Session) printStartup() {
	if s.opts.Quiet {
		return
	}
	if d := s.describeIntercept(); d != "" {
		defer fmt.Fprintf(s.opts.Stderr, "kubectl-tp: intercept: %s\n", d)
	}
	if t := s.transparent; t != nil {
		fmt.Fprintf(s.opts.Stderr, "kubectl-tp: session %s: pod %s/%s, %s (DNS %s); %s\n",
			s.ID, s.opts.Namespace, s.PodName, t.describe(), t.dns, s.pathDescription())
		return
	}
	fmt.Fprintf(s.opts.Stderr, "kubectl-tp: session %s: pod %s/%s, proxy variables: SOCKS5 %s, HTTP proxy %s, DNS %s; %s\n",
		s.ID, s.opts.Namespace, s.PodName, s.Endpoints.SOCKS, s.Endpoints.HTTP, s.Endpoints.DNS, s.pathDescription())
}
