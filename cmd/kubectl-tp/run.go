package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/capture"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"

	"github.com/kubectl-tp/kubectl-tp/envcapture"
	"github.com/kubectl-tp/kubectl-tp/internal/version"
	podintercept "github.com/kubectl-tp/kubectl-tp/podshim/intercept"
	"github.com/kubectl-tp/kubectl-tp/session"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// RunOptions are the options of `kubectl tp run`, filled by Complete and checked by Validate.
type RunOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	// Image is the podshim image (--image, $KUBECTL_TP_IMAGE, else the build's default).
	Image string
	// Quiet silences progress output.
	Quiet bool
	// IdleTimeout is podshim's idle timeout.
	IdleTimeout time.Duration
	// StartTimeout bounds the pod's start.
	StartTimeout time.Duration
	// From is the workload the session stands in for (--from TYPE/NAME[:CONTAINER]).
	From string
	// EnvFile and EnvJSON are paths to write the captured environment to; EnvSyntax is the
	// syntax of EnvFile (docker, posix or json).
	EnvFile, EnvJSON, EnvSyntax string
	// Mount is where volume contents go: "true" (a private temporary directory), "false" (off)
	// or a directory of the user's choice.
	Mount string
	// MaxVolumeSize bounds the copy of one volume (a quantity such as 10Mi).
	MaxVolumeSize string
	// SwapDeployment is the Deployment to swap for the proxy pod (NAME[:CONTAINER]).
	SwapDeployment string
	// Expose are the --expose LOCAL[:REMOTE] values.
	Expose []string
	// Intercept is --intercept SERVICE[:PORT]; Headers are its --header NAME=VALUE matches.
	Intercept string
	Headers   []string
	// Transparent is --transparent: carry every connection of the command to the cluster (Linux),
	// not only those of programs that honour proxy variables.
	Transparent bool
	// RealPaths shows the volume copies at their mount paths too, in transparent mode (--real-paths).
	RealPaths bool
	// Direct lets the tunnel go straight to the proxy pod when it is reachable (--direct).
	Direct bool
	// AlsoProxy are the --also-proxy ranges carried to the cluster in transparent mode.
	AlsoProxy []string
	// Verbose prints detail: failed dials and DNS errors of the command's connections.
	Verbose bool
	// Command is the argv after --.
	Command []string

	transparent session.TransparentMode
	intercept   *session.InterceptSpec
	alsoProxy   []netip.Prefix

	target         *session.Target
	swap           *session.Target
	ports          []session.PortMap
	maxVolumeBytes int64

	namespace string
	config    *rest.Config
	client    session.Clientset
}

func newRunCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &RunOptions{configFlags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARGS...]",
		Short: "Run COMMAND locally with the cluster's network",
		Long: `Run COMMAND locally as if it ran in the cluster.

A proxy pod (podshim) is started in the namespace and reached through the API server's
port-forward. On Linux (transparent mode, the default) every connection of COMMAND and of the
processes it starts to cluster names, Service and pod IPs and --also-proxy ranges goes through
the pod, whatever the program; everything else is untouched. Elsewhere, or with
--transparent=false, COMMAND gets HTTP_PROXY/HTTPS_PROXY/ALL_PROXY pointing at proxies on
127.0.0.1 that resolve names in the cluster. Always: TP_DNS names a DNS server that answers from
cluster DNS, and TP_NAMESPACE/TP_POD the session. When COMMAND exits the pod is deleted and its
exit code is returned.`,
		Example: `  # Call a Service by its name from a local curl
  kubectl tp run -- curl -sf http://my-service:8080/healthz

  # Any program, e.g. psql, reaches the cluster (Linux); also a database outside it, via the pod
  kubectl tp run --also-proxy 10.20.0.0/16 -- psql -h postgres.data -U app

  # Run a local program in namespace staging, quietly
  kubectl tp run -n staging --quiet -- go run ./cmd/api

  # Run like deployment/api (its env and volumes), without taking its traffic
  kubectl tp run --from deployment/api --env-file api.env -- ./api

  # Swap deployment/api for your local process on port 8080, reached by the api Service
  kubectl tp run --swap-deployment api --expose 8080 -- ./api --port 8080

  # Resolve cluster names through the session's DNS server
  kubectl tp run -- sh -c 'dig @${TP_DNS%:*} -p ${TP_DNS##*:} my-service.default.svc.cluster.local'`,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.Image, "image", "", "podshim image (default $KUBECTL_TP_IMAGE, else "+version.Image()+")")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "print no progress while starting")
	cmd.Flags().BoolVarP(&o.Verbose, "verbose", "v", false, "print detail: failed dials and DNS errors of the command's connections")
	cmd.Flags().DurationVar(&o.IdleTimeout, "idle-timeout", 30*time.Second, "how long the proxy pod lives on after it last heard from this process (e.g. after a crash)")
	cmd.Flags().DurationVar(&o.StartTimeout, "start-timeout", 2*time.Minute, "how long to wait for the proxy pod to start")
	cmd.Flags().StringVar(&o.From, "from", "", "run like this workload (TYPE/NAME[:CONTAINER]; bare NAME means deployment/NAME): its env and volumes, without its traffic")
	cmd.Flags().StringVar(&o.EnvFile, "env-file", "", "with --from: write the captured environment to this file (see --env-syntax)")
	cmd.Flags().StringVar(&o.EnvJSON, "env-json", "", "with --from: write the captured environment to this file as JSON")
	cmd.Flags().StringVar(&o.EnvSyntax, "env-syntax", "docker", "syntax of --env-file: docker (compose .env), posix (export lines) or json")
	cmd.Flags().StringVar(&o.Mount, "mount", "true", "with --from: copy the workload's volumes to a private temporary directory (true), to DIR, or not at all (false)")
	cmd.Flags().Lookup("mount").NoOptDefVal = "true"
	cmd.Flags().StringVar(&o.MaxVolumeSize, "max-volume-size", "10Mi", "with --from: largest volume (e.g. a PVC) to copy; larger ones are skipped with a warning")
	cmd.Flags().StringVar(&o.SwapDeployment, "swap-deployment", "", "replace this Deployment (NAME[:CONTAINER]) with the proxy pod until exit: its Services reach your local process")
	cmd.Flags().BoolVar(&o.Direct, "direct", true, "carry the tunnel straight to the proxy pod's IP over TLS (pinned certificates) when this machine can reach it, else through the API server; false: always through the API server")
	cmd.Flags().BoolVar(&o.Transparent, "transparent", true, "carry every connection of COMMAND and its children to cluster names and addresses through the tunnel (Linux "+capture.MinKernel+"+; where it cannot work, proxy variables are used and a line says why); false: proxy variables only")
	cmd.Flags().BoolVar(&o.RealPaths, "real-paths", true, "with --from or --swap-deployment in transparent mode (Linux): COMMAND also sees the volume copies at their mount paths (e.g. /var/run/secrets/kubernetes.io/serviceaccount), read-only, in a private mount namespace; false: under $TP_ROOT only")
	cmd.Flags().StringArrayVar(&o.AlsoProxy, "also-proxy", nil, "in transparent mode, also carry this range to the cluster (CIDR or address, repeatable; e.g. a database reachable only from the cluster)")
	cmd.Flags().StringVar(&o.Intercept, "intercept", "", "take the requests of this Service (SERVICE[:PORT]) that carry every --header to your local process (port = the Service's targetPort, or --expose LOCAL:TARGET); other requests go to its pods, which keep running; without --header, all its traffic")
	cmd.Flags().StringArrayVar(&o.Headers, "header", nil, "with --intercept: a header NAME=VALUE the requests must carry (repeatable; all must match)")
	cmd.Flags().StringArrayVar(&o.Expose, "expose", nil, "carry connections to pod port REMOTE back to local port LOCAL (LOCAL[:REMOTE], repeatable)")
	return cmd
}

// Complete fills the options from flags, environment and kubeconfig.
func (o *RunOptions) Complete(cmd *cobra.Command, args []string) error {
	if dash := cmd.ArgsLenAtDash(); dash > 0 {
		return fmt.Errorf("unexpected arguments before --: %v; put the command after --, e.g. kubectl tp run -- ./app", args[:dash])
	}
	o.Command = args
	switch {
	case !o.Transparent:
		o.transparent = session.TransparentOff
	case cmd.Flags().Changed("transparent"):
		o.transparent = session.TransparentOn
	default:
		o.transparent = session.TransparentAuto
	}
	if o.Image == "" {
		o.Image = os.Getenv("KUBECTL_TP_IMAGE")
	}
	if o.Image == "" {
		o.Image = version.Image()
	}
	if len(o.Command) == 0 {
		return nil // Validate reports it
	}
	var err error
	if o.namespace, o.client, err = clientFor(o.configFlags); err != nil {
		return err
	}
	o.config, err = o.configFlags.ToRESTConfig()
	return err
}

// Validate checks the options before anything is created in the cluster.
func (o *RunOptions) Validate() error {
	if len(o.Command) == 0 {
		return errors.New("no command given; put it after --, e.g. kubectl tp run -- ./app")
	}
	for _, e := range o.Expose {
		pm, err := session.ParsePortMap(e)
		if err != nil {
			return err
		}
		o.ports = append(o.ports, pm)
	}
	if o.SwapDeployment != "" {
		if o.From != "" {
			return errors.New("--swap-deployment and --from both name a workload; use one of them")
		}
		if strings.Contains(o.SwapDeployment, "/") {
			return fmt.Errorf("--swap-deployment takes a Deployment NAME[:CONTAINER], not %q", o.SwapDeployment)
		}
		t, err := session.ParseTarget(o.SwapDeployment)
		if err != nil {
			return fmt.Errorf("--swap-deployment: %w", err)
		}
		o.swap = &t
	}
	if len(o.Headers) > 0 && o.Intercept == "" {
		return errors.New("--header needs --intercept SERVICE[:PORT]")
	}
	if o.Intercept != "" {
		if o.SwapDeployment != "" {
			return errors.New("--intercept and --swap-deployment both take a service's traffic; use one of them")
		}
		spec, err := session.ParseIntercept(o.Intercept)
		if err != nil {
			return err
		}
		if _, err := podintercept.ParseMatch(o.Headers...); err != nil {
			return fmt.Errorf("--header: %w", err)
		}
		spec.Headers = o.Headers
		o.intercept = &spec
	}
	if o.From != "" {
		t, err := session.ParseTarget(o.From)
		if err != nil {
			return fmt.Errorf("--from: %w", err)
		}
		o.target = &t
	} else if o.swap == nil && o.intercept == nil && (o.EnvFile != "" || o.EnvJSON != "") {
		return errors.New("--env-file and --env-json need a workload to capture from; add --from TYPE/NAME")
	}
	q, err := resource.ParseQuantity(o.MaxVolumeSize)
	if err != nil || q.Value() <= 0 {
		return fmt.Errorf("--max-volume-size %q is not a size; use e.g. 10Mi or 1Gi", o.MaxVolumeSize)
	}
	if q.Value() > tunnel.MaxFilesBytes {
		return fmt.Errorf("--max-volume-size %s is above the 64Mi podshim can send per volume; use 64Mi or less", o.MaxVolumeSize)
	}
	o.maxVolumeBytes = q.Value()
	if _, err := envcapture.ParseSyntax(o.EnvSyntax); err != nil {
		return fmt.Errorf("--env-syntax: %w", err)
	}
	for _, v := range o.AlsoProxy {
		p, err := parseRange(v)
		if err != nil {
			return err
		}
		o.alsoProxy = append(o.alsoProxy, p)
	}
	if len(o.alsoProxy) > 0 && o.transparent == session.TransparentOff {
		return errors.New("--also-proxy works in transparent mode only; drop it or --transparent=false")
	}
	if o.IdleTimeout < 5*time.Second {
		return fmt.Errorf("--idle-timeout %s is too short; use 5s or more", o.IdleTimeout)
	}
	if _, err := session.LookPath(o.Command[0]); err != nil {
		return exitError{code: session.ExitCommandNotFound, err: err}
	}
	return nil
}

// Run runs the session; the child's exit code becomes ours.
func (o *RunOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Signals during start-up cancel it (and the pod is deleted); once the child runs, the session's
	// child runner forwards them to the child instead.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var got atomic.Value // the first signal received
	go func() {
		select {
		case s := <-sigs:
			got.Store(s)
			cancel()
		case <-ctx.Done():
		}
	}()
	code, err := session.Run(ctx, session.Options{
		Config: o.config, Client: o.client, Namespace: o.namespace,
		Image: o.Image, Command: o.Command, IdleTimeout: o.IdleTimeout, StartTimeout: o.StartTimeout,
		From: o.target, Swap: o.swap, Intercept: o.intercept, Expose: o.ports, EnvFile: o.EnvFile, EnvJSON: o.EnvJSON, EnvSyntax: o.EnvSyntax, Mount: o.Mount,
		MaxVolumeBytes: o.maxVolumeBytes, Transparent: o.transparent, AlsoProxy: o.alsoProxy, Verbose: o.Verbose, Direct: o.Direct, NoRealPaths: !o.RealPaths,
		Stdin: o.In, Stdout: o.Out, Stderr: o.ErrOut, Quiet: o.Quiet,
	})
	if err != nil {
		if s, ok := got.Load().(syscall.Signal); ok && errors.Is(err, context.Canceled) {
			err = fmt.Errorf("interrupted by %s while starting", s)
			code = 128 + int(s)
		}
		if code == 0 {
			code = 1
		}
		return exitError{code: code, err: err}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// parseRange reads an --also-proxy value: a CIDR, or one address.
func parseRange(v string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("--also-proxy %q is not a range; give a CIDR such as 10.20.0.0/16 or an address such as 10.20.0.5", v)
}

func kubeconfigError(err error) error {
	return fmt.Errorf("%v (check --kubeconfig, --context and $KUBECONFIG)", err)
}
