package session

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/kubectl-tp/kubectl-tp/podshim/contract"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Target names the workload a session stands in for: --from TYPE/NAME[:CONTAINER].
type Target struct {
	// Kind is the canonical resource: deployments, statefulsets, daemonsets, replicasets or pods.
	Kind string
	// Name is the workload's name.
	Name string
	// Container is the chosen container; empty means the default one.
	Container string
}

// kinds maps every accepted spelling to the canonical resource name.
var kinds = map[string]string{
	"deployment": "deployments", "deployments": "deployments", "deploy": "deployments",
	"statefulset": "statefulsets", "statefulsets": "statefulsets", "sts": "statefulsets",
	"daemonset": "daemonsets", "daemonsets": "daemonsets", "ds": "daemonsets",
	"replicaset": "replicasets", "replicasets": "replicasets", "rs": "replicasets",
	"pod": "pods", "pods": "pods", "po": "pods",
}

// DefaultContainerAnnotation names the default container, as kubectl understands it.
const DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// ParseTarget parses TYPE/NAME[:CONTAINER]; a bare NAME means deployment/NAME.
func ParseTarget(s string) (Target, error) {
	if s == "" {
		return Target{}, fmt.Errorf("empty workload; use TYPE/NAME[:CONTAINER], e.g. deployment/api:app")
	}
	rest, container, _ := strings.Cut(s, ":")
	kind, name, hasKind := strings.Cut(rest, "/")
	if !hasKind {
		kind, name = "deployment", rest
	}
	canon, ok := kinds[strings.ToLower(kind)]
	if !ok {
		return Target{}, fmt.Errorf("workload type %q is not supported; use one of deployment, statefulset, daemonset, replicaset, pod (e.g. deployment/%s)", kind, name)
	}
	if name == "" || strings.Contains(name, "/") {
		return Target{}, fmt.Errorf("workload %q has no valid name; use TYPE/NAME[:CONTAINER], e.g. deployment/api:app", s)
	}
	return Target{Kind: canon, Name: name, Container: container}, nil
}

// String writes the target back in --from syntax, e.g. "deployment/api:app".
func (t Target) String() string {
	s := strings.TrimSuffix(t.Kind, "s") + "/" + t.Name
	if t.Container != "" {
		s += ":" + t.Container
	}
	return s
}

// Permission is what reading the target needs.
func (t Target) Permission() Permission { return Permission{Verb: "get", Resource: t.Kind} }

// Template fetches the target's pod template (for a Pod: its metadata and spec).
func (t Target) Template(ctx context.Context, cs Clientset, ns string) (*corev1.PodTemplateSpec, error) {
	k, ok := workloadKindOf(t.Kind)
	if !ok {
		return nil, fmt.Errorf("workload type %q is not supported", t.Kind)
	}
	tpl, err := k.template(ctx, cs, ns, t.Name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s not found in namespace %q; list them with: kubectl get %s -n %s", t.String(), ns, t.Kind, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", t, err)
	}
	return tpl, nil
}

// WorkloadNames lists the names of the objects of kind (as Target.Kind names it) in ns, sorted:
// what shell completion offers.
func WorkloadNames(ctx context.Context, cs Clientset, ns, kind string) ([]string, error) {
	k, ok := workloadKindOf(kind)
	if !ok {
		return nil, fmt.Errorf("workload kind %q cannot be listed", kind)
	}
	names, err := k.names(ctx, cs, ns)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// workloadKind reads one kind of workload: its pod template and the names in a namespace.
type workloadKind struct {
	template func(ctx context.Context, cs Clientset, ns, name string) (*corev1.PodTemplateSpec, error)
	names    func(ctx context.Context, cs Clientset, ns string) ([]string, error)
}

// workloadKindOf is the one place that knows how each supported kind is read.
func workloadKindOf(kind string) (workloadKind, bool) {
	get, list := metav1.GetOptions{}, metav1.ListOptions{}
	switch kind {
	case "deployments":
		return workloadKind{
			template: func(ctx context.Context, cs Clientset, ns, name string) (*corev1.PodTemplateSpec, error) {
				o, err := cs.AppsV1().Deployments(ns).Get(ctx, name, get)
				return templateOf(o, err, func() *corev1.PodTemplateSpec { return &o.Spec.Template })
			},
			names: func(ctx context.Context, cs Clientset, ns string) ([]string, error) {
				l, err := cs.AppsV1().Deployments(ns).List(ctx, list)
				return namesOf(l, err, func() []appsv1.Deployment { return l.Items })
			},
		}, true
	case "statefulsets":
		return workloadKind{
			template: func(ctx context.Context, cs Clientset, ns, name string) (*corev1.PodTemplateSpec, error) {
				o, err := cs.AppsV1().StatefulSets(ns).Get(ctx, name, get)
				return templateOf(o, err, func() *corev1.PodTemplateSpec { return &o.Spec.Template })
			},
			names: func(ctx context.Context, cs Clientset, ns string) ([]string, error) {
				l, err := cs.AppsV1().StatefulSets(ns).List(ctx, list)
				return namesOf(l, err, func() []appsv1.StatefulSet { return l.Items })
			},
		}, true
	case "daemonsets":
		return workloadKind{
			template: func(ctx context.Context, cs Clientset, ns, name string) (*corev1.PodTemplateSpec, error) {
				o, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, get)
				return templateOf(o, err, func() *corev1.PodTemplateSpec { return &o.Spec.Template })
			},
			names: func(ctx context.Context, cs Clientset, ns string) ([]string, error) {
				l, err := cs.AppsV1().DaemonSets(ns).List(ctx, list)
				return namesOf(l, err, func() []appsv1.DaemonSet { return l.Items })
			},
		}, true
	case "replicasets":
		return workloadKind{
			template: func(ctx context.Context, cs Clientset, ns, name string) (*corev1.PodTemplateSpec, error) {
				o, err := cs.AppsV1().ReplicaSets(ns).Get(ctx, name, get)
				return templateOf(o, err, func() *corev1.PodTemplateSpec { return &o.Spec.Template })
			},
			names: func(ctx context.Context, cs Clientset, ns string) ([]string, error) {
				l, err := cs.AppsV1().ReplicaSets(ns).List(ctx, list)
				return namesOf(l, err, func() []appsv1.ReplicaSet { return l.Items })
			},
		}, true
	case "pods":
		return workloadKind{
			template: func(ctx context.Context, cs Clientset, ns, name string) (*corev1.PodTemplateSpec, error) {
				o, err := cs.CoreV1().Pods(ns).Get(ctx, name, get)
				return templateOf(o, err, func() *corev1.PodTemplateSpec { return &corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec} })
			},
			names: func(ctx context.Context, cs Clientset, ns string) ([]string, error) {
				l, err := cs.CoreV1().Pods(ns).List(ctx, list)
				return namesOf(l, err, func() []corev1.Pod { return l.Items })
			},
		}, true
	}
	return workloadKind{}, false
}

// templateOf returns tpl() unless err is set (the object is then not to be touched).
func templateOf[O any](_ O, err error, tpl func() *corev1.PodTemplateSpec) (*corev1.PodTemplateSpec, error) {
	if err != nil {
		return nil, err
	}
	return tpl(), nil
}

// namesOf returns the names of items() unless err is set.
func namesOf[L any, T any, PT interface {
	*T
	GetName() string
}](_ L, err error, items func() []T) ([]string, error) {
	if err != nil {
		return nil, err
	}
	var names []string
	for _, o := range items() {
		names = append(names, PT(&o).GetName())
	}
	return names, nil
}

// pickContainer chooses the target container: the named one, else the default-container
// annotation, else the first.
func pickContainer(tpl *corev1.PodTemplateSpec, want string) (*corev1.Container, error) {
	if want == "" {
		want = tpl.Annotations[DefaultContainerAnnotation]
	}
	if want == "" && len(tpl.Spec.Containers) > 0 {
		return &tpl.Spec.Containers[0], nil
	}
	names := make([]string, 0, len(tpl.Spec.Containers))
	for i := range tpl.Spec.Containers {
		if tpl.Spec.Containers[i].Name == want {
			return &tpl.Spec.Containers[i], nil
		}
		names = append(names, tpl.Spec.Containers[i].Name)
	}
	return nil, fmt.Errorf("container %q not found; valid containers: %s", want, strings.Join(names, ", "))
}

// ReadyPort is where podshim answers its readiness probe once exposed ports are carried back.
const ReadyPort = contract.ReadyPort

// AnnotationFrom records on the proxy pod which workload it stands in for.
const AnnotationFrom = "kubectl-tp.io/from"

// podFromTemplate builds the proxy pod from the target's pod template: same service account,
// volumes, scheduling constraints and pull secrets, and the chosen container's env, envFrom and
// volume mounts (read-only), so the kubelet computes the environment and mounts the volumes exactly
// as for the real pod. The template's labels and annotations are not copied, so no Service,
// controller or mesh injector selects the proxy pod; init and sidecar containers, probes,
// lifecycle hooks and host namespaces are left out (see README).
func podFromTemplate(s podSpec, tpl *corev1.PodTemplateSpec, c *corev1.Container, from string) *corev1.Pod {
	pod := buildPod(s)
	pod.Annotations[AnnotationFrom] = from
	src := tpl.Spec
	spec := &pod.Spec
	spec.ServiceAccountName = src.ServiceAccountName
	spec.AutomountServiceAccountToken = src.AutomountServiceAccountToken
	spec.EnableServiceLinks = src.EnableServiceLinks
	spec.Volumes = make([]corev1.Volume, len(src.Volumes))
	for i := range src.Volumes {
		spec.Volumes[i] = *src.Volumes[i].DeepCopy()
	}
	spec.ImagePullSecrets = src.ImagePullSecrets
	spec.NodeSelector = src.NodeSelector
	spec.Tolerations = src.Tolerations
	spec.Affinity = src.Affinity
	spec.PriorityClassName = src.PriorityClassName
	spec.RuntimeClassName = src.RuntimeClassName
	spec.DNSPolicy = src.DNSPolicy
	spec.DNSConfig = src.DNSConfig
	spec.HostAliases = src.HostAliases
	spec.Subdomain = src.Subdomain
	// The app's identity, so that files readable only by it are readable by podshim; never root.
	if psc := src.SecurityContext; psc != nil {
		spec.SecurityContext.FSGroup = psc.FSGroup
		spec.SecurityContext.SupplementalGroups = psc.SupplementalGroups
		spec.SecurityContext.Sysctls = psc.Sysctls
		if uid := psc.RunAsUser; uid != nil && *uid != 0 {
			spec.SecurityContext.RunAsUser = ptr.To(*uid)
		}
		if gid := psc.RunAsGroup; gid != nil && *gid != 0 {
			spec.SecurityContext.RunAsGroup = ptr.To(*gid)
		}
	}
	if csc := c.SecurityContext; csc != nil {
		if uid := csc.RunAsUser; uid != nil && *uid != 0 {
			spec.SecurityContext.RunAsUser = ptr.To(*uid)
		}
		if gid := csc.RunAsGroup; gid != nil && *gid != 0 {
			spec.SecurityContext.RunAsGroup = ptr.To(*gid)
		}
	}
	shim := &spec.Containers[0]
	env := make([]corev1.EnvVar, len(c.Env))
	for i := range c.Env {
		env[i] = *c.Env[i].DeepCopy()
	}
	shim.Env = append(env, shim.Env...)
	renameContainerRefs(spec)
	shim.EnvFrom = slices.Clone(c.EnvFrom)
	shim.WorkingDir = c.WorkingDir
	for _, m := range c.VolumeMounts {
		m.ReadOnly = true
		m.MountPropagation = nil
		shim.VolumeMounts = append(shim.VolumeMounts, m)
	}
	// resourceFieldRef values are computed from the container's resources: keep them.
	shim.Resources = *c.Resources.DeepCopy()
	if shim.Resources.Requests == nil {
		shim.Resources.Requests = corev1.ResourceList{}
	}
	return pod
}

// renameContainerRefs points the resourceFieldRefs that name the workload's container (in env and
// in downwardAPI volumes, plain or projected) at the proxy pod's container, which carries that
// container's resources: the kubelet refuses a pod whose references name a container it lacks.
// References to other containers of the template (sidecars, which the proxy pod does not run)
// are pointed there too: their values then are the chosen container's, not the sidecar's.
func renameContainerRefs(spec *corev1.PodSpec) {
	fix := func(r *corev1.ResourceFieldSelector) {
		if r != nil && r.ContainerName != "" {
			r.ContainerName = ContainerName
		}
	}
	for i := range spec.Containers {
		for j := range spec.Containers[i].Env {
			if vf := spec.Containers[i].Env[j].ValueFrom; vf != nil {
				fix(vf.ResourceFieldRef)
			}
		}
	}
	items := func(list []corev1.DownwardAPIVolumeFile) {
		for k := range list {
			fix(list[k].ResourceFieldRef)
		}
	}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if v.DownwardAPI != nil {
			items(v.DownwardAPI.Items)
		}
		if v.Projected != nil {
			for j := range v.Projected.Sources {
				if d := v.Projected.Sources[j].DownwardAPI; d != nil {
					items(d.Items)
				}
			}
		}
	}
}

// keepLabels gives the proxy pod the template's labels (so the Deployment's Services select it)
// besides its own. The ReplicaSets of the Deployment do not adopt it: their selectors also require
// the pod-template-hash label, which templates do not carry.
func keepLabels(pod *corev1.Pod, tpl *corev1.PodTemplateSpec) {
	for k, v := range tpl.Labels {
		if _, ours := pod.Labels[k]; !ours && k != "pod-template-hash" {
			pod.Labels[k] = v
		}
	}
}

// exposePorts declares the exposed ports on the podshim container, passes them to podshim, and
// lets a non-root podshim bind ports below 1024 with the namespaced sysctl that Pod Security
// "restricted" allows.
func exposePorts(pod *corev1.Pod, ports []PortMap) {
	if len(ports) == 0 {
		return
	}
	c := &pod.Spec.Containers[0]
	// Ready only once podshim carries the ports back (see podshim.Server.ReadyAddr), so that a
	// Service sends nothing to the pod before that.
	c.Args = append(c.Args, contract.Arg(contract.FlagReady, fmt.Sprintf(":%d", ReadyPort)))
	c.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(ReadyPort)}},
		PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1,
	}
	low := false
	for _, p := range ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: int32(p.Remote), Protocol: corev1.ProtocolTCP})
		low = low || p.Remote < 1024
	}
	if !low {
		return
	}
	sc := pod.Spec.SecurityContext
	for i, s := range sc.Sysctls {
		if s.Name == "net.ipv4.ip_unprivileged_port_start" {
			sc.Sysctls[i].Value = "0"
			return
		}
	}
	sc.Sysctls = append(sc.Sysctls, corev1.Sysctl{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"})
}
