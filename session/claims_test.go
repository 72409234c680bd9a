package session

// README claims checked without a cluster (issue #13: every claim has a test that would catch it
// being false): signals reach the child and its death by signal N is exit code 128+N; a terminal's
// window-size changes reach the child; --start-timeout gives a clear error and leaves no pod; the
// next swap restores a swap left by a dead session; the proxy pod keeps the template's
// imagePullSecrets, tolerations and affinity; --env-file/--env-json carry tricky values exactly;
// --mount DIR keeps the copy and --mount=false copies nothing. Whole sessions run against
// fakeCluster (fakecluster_test.go).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/kubectl-tp/kubectl-tp/envcapture"
)

// TestChildForwardsSignals checks README's "SIGINT, SIGTERM and SIGHUP are passed to the child"
// and "128+N when signal N ended it": for each signal sent to this process (as the user's
// terminal or `kill` sends it to kubectl-tp) a child that keeps the default action dies of it,
// and Child.Run reports 128+N.
func TestChildForwardsSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			outR, outW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer outR.Close()
			// Default actions whatever this test process was started with (a SIGINT ignored by
			// a background job would be inherited as ignored).
			c := Child{
				Argv: []string{"python3", "-u", "-c", fmt.Sprintf(`
import signal, time
signal.signal(%d, signal.SIG_DFL)
print("ready")
time.sleep(60)
`, int(sig))},
				Env: os.Environ(), Stdout: outW, Stderr: os.Stderr,
			}
			type result struct {
				code int
				err  error
			}
			done := make(chan result, 1)
			go func() {
				code, err := c.Run()
				_ = outW.Close()
				done <- result{code, err}
			}()
			if l, err := bufio.NewReader(outR).ReadString('\n'); err != nil || l != "ready\n" {
				t.Fatalf("child start: %q, %v", l, err)
			}
			if err := syscall.Kill(os.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				if r.err != nil {
					t.Fatalf("Run: %v", r.err)
				}
				if want := 128 + int(sig); r.code != want {
					t.Errorf("exit code %d after %s, want %d (128+%d)", r.code, sig, want, int(sig))
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("the child never got %s", sig)
			}
		})
	}
}

// TestChildFollowsWindowSize checks that when stdin is a terminal the child runs in a
// pseudo-terminal of the same size, and that a later change of the terminal's size reaches the
// child (SIGWINCH and the new size), as full-screen programs need. The kernel sends SIGWINCH to
// the terminal's foreground process group, kubectl-tp; here the test sends it to itself after
// resizing the terminal.
func TestChildFollowsWindowSize(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	c := Child{
		Argv: []string{"python3", "-u", "-c", `
import fcntl, signal, struct, sys, termios
def size():
    r, c = struct.unpack("hhhh", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    return "%d %d" % (r, c)
signal.signal(signal.SIGWINCH, lambda *a: print("WINCH " + size()))
print("READY " + size())
sys.stdin.readline()
`},
		Env: os.Environ(), Stdin: tty, Stdout: outW, Stderr: os.Stderr,
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := c.Run()
		_ = outW.Close()
		done <- result{code, err}
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		var seen []string
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the child's output ended without %q; saw %q", want, seen)
				}
				if l == want {
					return
				}
				seen = append(seen, l)
			case <-deadline:
				t.Fatalf("no %q from the child; saw %q", want, seen)
			}
		}
	}
	expect("READY 24 80")
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 51, Cols: 133}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	expect("WINCH 51 133")
	if _, err := ptmx.Write([]byte("q\r")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.code != 0 {
			t.Errorf("child ended with %d, %v; want 0", r.code, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the child did not end after its input line")
	}
}

// TestRunStartTimeout checks README's `--start-timeout`: when the proxy pod does not run within
// it, the run fails with an error naming the pod, the timeout and how to look at the pod; the
// command is never started; and the pod is deleted. The cluster here admits the pod but never
// runs it (a pull or a volume that never completes).
func TestRunStartTimeout(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
		r.Status.Allowed = true
		return true, r, nil
	})
	marker := filepath.Join(t.TempDir(), "command-ran")
	var stderr lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	code, err := Run(ctx, Options{
		Config: &rest.Config{Host: "http://127.0.0.1:1"}, Client: ctxClientset{cs}, Namespace: "ns",
		Image: "podshim:test", Command: []string{"touch", marker}, StartTimeout: time.Second,
		Stderr: &stderr, Quiet: true,
	})
	took := time.Since(start)
	if err == nil || code == 0 {
		t.Fatalf("Run = %d, %v; want a non-zero code and an error", code, err)
	}
	for _, part := range []string{"proxy pod tp-", "did not start within 1s", "kubectl describe pod -n ns tp-"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q lacks %q", err, part)
		}
	}
	if took > 15*time.Second {
		t.Errorf("Run took %s with --start-timeout 1s", took)
	}
	if _, serr := os.Stat(marker); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("the command ran although the session never started (stat: %v)", serr)
	}
	pods, lerr := cs.CoreV1().Pods("ns").List(context.Background(), metav1.ListOptions{})
	if lerr != nil {
		t.Fatal(lerr)
	}
	if len(pods.Items) != 0 {
		t.Errorf("%d proxy pods left after the start timed out, want none", len(pods.Items))
	}
	created := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "pods" {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d pods created, want exactly 1 (the test must reach the wait for the pod)", created)
	}
}

// TestClaimRestoresDeadSwap checks README's "`kubectl tp cleanup` (or the next swap of that
// Deployment) restores it": a Deployment left at 0 replicas by a session whose proxy pod ended,
// failed, is being deleted or is gone is taken over by the next swap with the dead session's
// recorded replica count (so the new session's end restores the real count, not 0), and one
// held by a live session is refused with that session's name.
func TestClaimRestoresDeadSwap(t *testing.T) {
	cases := []struct {
		name  string
		pod   *corev1.Pod // the old session's proxy pod; nil: gone
		alive bool
	}{
		{"proxy pod gone", nil, false},
		{"proxy pod succeeded", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, false},
		{"proxy pod failed", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, false},
		{"proxy pod being deleted", &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: ptr.To(metav1.Now()), Finalizers: []string{"x"}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}, false},
		{"live session (running)", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, true},
		{"live session (pending)", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dep := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns", Annotations: map[string]string{
					AnnotationSwapSession: "old", AnnotationSwapPod: "tp-old", AnnotationSwapReplicas: "3",
					AnnotationSwapOwner: "alice@laptop", AnnotationSwapStarted: "2026-01-02T03:04:05Z",
				}},
				Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](0)},
			}
			objs := []runtime.Object{dep}
			if tc.pod != nil {
				p := tc.pod.DeepCopy()
				p.Name, p.Namespace = "tp-old", "ns"
				objs = append(objs, p)
			}
			cs := fake.NewClientset(objs...)
			var warnings []string
			ctx := context.Background()
			original, err := claimDeployment(ctx, cs, "ns", "api",
				SwapInfo{Session: "new", Pod: "tp-new", Owner: "bob@laptop", Started: time.Now()},
				func(m string) { warnings = append(warnings, m) })
			got, gerr := cs.AppsV1().Deployments("ns").Get(ctx, "api", metav1.GetOptions{})
			if gerr != nil {
				t.Fatal(gerr)
			}
			if tc.alive {
				if !errors.Is(err, ErrSwappedByLiveSession) || !strings.Contains(err.Error(), "old") || !strings.Contains(err.Error(), "alice@laptop") {
					t.Fatalf("claim = %v; want a refusal naming session old of alice@laptop", err)
				}
				if got.Annotations[AnnotationSwapSession] != "old" || *got.Spec.Replicas != 0 {
					t.Errorf("a refused claim changed the Deployment: session %q, replicas %d", got.Annotations[AnnotationSwapSession], *got.Spec.Replicas)
				}
				return
			}
			if err != nil {
				t.Fatalf("claim over a dead session: %v", err)
			}
			if original != 3 {
				t.Errorf("original replicas = %d, want the dead session's record 3", original)
			}
			if len(warnings) != 1 || !strings.Contains(warnings[0], "session old") || !strings.Contains(warnings[0], "restoring it to 3 replicas") {
				t.Errorf("warnings %q; want one saying the dead session's swap is restored to 3 replicas", warnings)
			}
			if a := got.Annotations; a[AnnotationSwapSession] != "new" || a[AnnotationSwapPod] != "tp-new" || a[AnnotationSwapReplicas] != "3" {
				t.Errorf("annotations after the claim: %v; want session new, pod tp-new, replicas 3", a)
			}
			// The new session's end restores the count the dead session recorded.
			if ok, err := RestoreDeployment(cs, "ns", "api", "new"); !ok || err != nil {
				t.Fatalf("restore by the new session: %v, %v", ok, err)
			}
			got, _ = cs.AppsV1().Deployments("ns").Get(ctx, "api", metav1.GetOptions{})
			if *got.Spec.Replicas != 3 || got.Annotations[AnnotationSwapSession] != "" {
				t.Errorf("after the new session: replicas %d, annotations %v; want 3 and none", *got.Spec.Replicas, got.Annotations)
			}
		})
	}
}

// TestFromKeepsSchedulingAndPullSecrets checks README's "same service account, volumes,
// imagePullSecrets, nodeSelector, tolerations and affinity" on the pod a whole session creates
// --from a Deployment, and that the container's resources are kept (so resourceFieldRef values
// match).
func TestFromKeepsSchedulingAndPullSecrets(t *testing.T) {
	tpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "api-sa",
			ImagePullSecrets:   []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "mirror"}},
			NodeSelector:       map[string]string{"disk": "ssd"},
			Tolerations: []corev1.Toleration{
				{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "api", Effect: corev1.TaintEffectNoSchedule},
				{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
			},
			Affinity: &corev1.Affinity{
				NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
					NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
						{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}},
					}}},
				}},
				PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
					Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname",
						LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}},
				}}},
			},
			Containers: []corev1.Container{{
				Name: "app", Image: "api:1",
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resourceMust("250m"), corev1.ResourceMemory: resourceMust("64Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resourceMust("256Mi")},
				},
			}},
		},
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns"}, Spec: appsv1.DeploymentSpec{Template: tpl}}
	f := newFakeCluster(t, dep)
	f.startSession(t, Options{From: &Target{Kind: "deployments", Name: "api"}, Mount: "false", EnvSyntax: "docker"})
	pods := f.createdPods()
	if len(pods) != 1 {
		t.Fatalf("created %d pods, want 1", len(pods))
	}
	spec := pods[0].Spec
	cases := []struct {
		name      string
		got, want any
	}{
		{"serviceAccountName", spec.ServiceAccountName, tpl.Spec.ServiceAccountName},
		{"imagePullSecrets", spec.ImagePullSecrets, tpl.Spec.ImagePullSecrets},
		{"nodeSelector", spec.NodeSelector, tpl.Spec.NodeSelector},
		{"tolerations", spec.Tolerations, tpl.Spec.Tolerations},
		{"affinity", spec.Affinity, tpl.Spec.Affinity},
		{"resources of the container", spec.Containers[0].Resources, tpl.Spec.Containers[0].Resources},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !apiequality.Semantic.DeepEqual(tc.got, tc.want) {
				t.Errorf("proxy pod has %+v, want the template's %+v", tc.got, tc.want)
			}
		})
	}
}

func resourceMust(s string) resource.Quantity { return resource.MustParse(s) }

// trickyEnv are values that break naive quoting in .env files and shell scripts.
var trickyEnv = []string{
	`QUOTES=it's "quoted"`,
	"NEWLINES=line1\nline2\n",
	`DOLLARS=$HOME ${X:-y} $$ cost$`,
	`BACKSLASHES=C:\Users\me\ \n \$X \`,
	"SPACES=  padded  value  ",
	"EMPTY=",
	"HASH=a #not-a-comment",
	"PEM=-----BEGIN KEY-----\nMIIB+abc/def==\n-----END KEY-----\n",
	"MIXED='a'\n\"b\" $c \\d # e",
}

// TestFromEnvFilesReadBack checks README's --env-file (compose .env quoting by default, or posix
// or json) and --env-json on a whole session: the values of the workload's container, captured
// through podshim, read back exactly — the posix file sourced by a real sh, the docker file and
// the JSON file read by their parsers — and the files are private (0600).
func TestFromEnvFilesReadBack(t *testing.T) {
	var env []corev1.EnvVar
	for _, kv := range trickyEnv {
		k, v, _ := strings.Cut(kv, "=")
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns"}, Spec: appsv1.DeploymentSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Env: env}}}},
	}}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("this test needs a POSIX shell: %v", err)
	}
	cases := []struct {
		syntax string
		// read returns the file's variables as KEY=value entries.
		read func(t *testing.T, path string) []string
	}{
		{"posix", func(t *testing.T, path string) []string {
			// Each value printed NUL-terminated, so newlines in values survive.
			script := `. "$1" || exit 1; for v in ` + names(trickyEnv) + `; do eval "printf '%s=%s\0' \"\$v\" \"\${$v}\""; done`
			cmd := exec.Command(sh, "-c", script, "sh", path)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/home/someone", "X=expanded"}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("sourcing %s: %v", path, err)
			}
			return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		}},
		{"docker", func(t *testing.T, path string) []string {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := envcapture.Read(strings.NewReader(string(b)), envcapture.SyntaxDocker)
			if err != nil {
				t.Fatalf("reading %s: %v", path, err)
			}
			return got
		}},
		{"json", readJSONEnv},
	}
	for _, tc := range cases {
		t.Run("--env-file --env-syntax "+tc.syntax+" and --env-json", func(t *testing.T) {
			dir := t.TempDir()
			envFile, envJSON := filepath.Join(dir, "app.env"), filepath.Join(dir, "app.json")
			f := newFakeCluster(t, dep)
			f.startSession(t, Options{From: &Target{Kind: "deployments", Name: "api"}, Mount: "false",
				EnvFile: envFile, EnvSyntax: tc.syntax, EnvJSON: envJSON})
			for _, file := range []struct {
				path string
				read func(*testing.T, string) []string
			}{{envFile, tc.read}, {envJSON, readJSONEnv}} {
				fi, err := os.Stat(file.path)
				if err != nil {
					t.Fatalf("not written: %v", err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %o, want 600", file.path, fi.Mode().Perm())
				}
				got := ours(file.read(t, file.path))
				if want := slices.Sorted(slices.Values(trickyEnv)); !slices.Equal(got, want) {
					b, _ := os.ReadFile(file.path)
					t.Errorf("%s reads back as\n%q\nwant\n%q\nfile:\n%s", filepath.Base(file.path), got, want, b)
				}
			}
		})
	}
}

// names returns the variable names of KEY=value entries, space-separated.
func names(env []string) string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		out = append(out, k)
	}
	return strings.Join(out, " ")
}

// ours returns, sorted, the entries of env whose names are in trickyEnv.
func ours(env []string) []string {
	want := map[string]bool{}
	for _, kv := range trickyEnv {
		k, _, _ := strings.Cut(kv, "=")
		want[k] = true
	}
	var out []string
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); want[k] {
			out = append(out, kv)
		}
	}
	slices.Sort(out)
	return out
}

// readJSONEnv reads a JSON object of strings with encoding/json.
func readJSONEnv(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s is not a JSON object of strings: %v", path, err)
	}
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// mountedDeployment returns deployment ns/api whose container "app" mounts a volume at vol, a
// directory of this machine holding config.yaml (in the fake cluster podshim runs here, so the
// "volume" it reads is that directory), with env.
func mountedDeployment(t *testing.T, env ...corev1.EnvVar) (string, *appsv1.Deployment) {
	t.Helper()
	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "config.yaml"), []byte("color: green\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return vol, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns"}, Spec: appsv1.DeploymentSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Containers: []corev1.Container{{Name: "app", Env: env,
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: vol}}}},
		}},
	}}
}

// TestFromMountModes checks README's --mount: by default the volume copy is a private
// temporary directory removed on exit; with --mount DIR it goes to DIR and is kept on exit;
// with --mount=false nothing is copied (no TP_ROOT, no directory), while the environment is
// still captured.
func TestFromMountModes(t *testing.T) {
	vol, dep := mountedDeployment(t, corev1.EnvVar{Name: "GREETING", Value: "hi"})
	chosen := filepath.Join(t.TempDir(), "my-copy")
	cases := []struct {
		name, mount string
		// root is the expected TP_ROOT ("" none; "tmp" a new directory under $TMPDIR).
		root string
		kept bool
	}{
		{"default: private temporary directory, removed", "true", "tmp", false},
		{"--mount DIR: kept", chosen, chosen, true},
		{"--mount=false: nothing copied", "false", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			f := newFakeCluster(t, dep)
			s := f.startSession(t, Options{From: &Target{Kind: "deployments", Name: "api"}, Mount: tc.mount, EnvSyntax: "docker"})
			if !slices.Contains(s.Captured, "GREETING=hi") {
				t.Errorf("environment not captured: %q", s.Captured)
			}
			root := s.Endpoints.Root
			env := ChildEnv(nil, s.Endpoints)
			hasRoot := slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "TP_ROOT=") })
			inTmp, _ := filepath.Glob(filepath.Join(tmp, copyPrefix+"*"))
			switch tc.root {
			case "":
				if root != "" || hasRoot {
					t.Errorf("--mount=false: TP_ROOT %q (in the child's env: %v), want none", root, hasRoot)
				}
				if len(inTmp) != 0 {
					t.Errorf("--mount=false made %v", inTmp)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				return
			case "tmp":
				if len(inTmp) != 1 || root != inTmp[0] {
					t.Fatalf("TP_ROOT %q, copies in $TMPDIR %v; want one, the root", root, inTmp)
				}
			default:
				if root != tc.root || len(inTmp) != 0 {
					t.Fatalf("TP_ROOT %q, copies in $TMPDIR %v; want %s and none", root, inTmp, tc.root)
				}
			}
			if !hasRoot {
				t.Error("TP_ROOT is not in the child's environment")
			}
			copied := filepath.Join(root, vol, "config.yaml")
			if b, err := os.ReadFile(copied); err != nil || string(b) != "color: green\n" {
				t.Fatalf("copy %s: %q, %v", copied, b, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_, err := os.Stat(copied)
			if kept := err == nil; kept != tc.kept {
				t.Errorf("after the session: copy kept = %v (stat: %v), want %v", kept, err, tc.kept)
			}
		})
	}
}

// TestFromMountDirMustBeNewOrEmpty pins down what README's "--mount DIR" does with the DIR it
// is given: a missing DIR is created (0700), an empty one is used, and one that holds anything —
// such as the copy a previous session kept there — is refused before the volumes are copied,
// with an error naming it, so that no file of the user's is overwritten or mixed with secrets.
func TestFromMountDirMustBeNewOrEmpty(t *testing.T) {
	vol, dep := mountedDeployment(t)
	cases := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		errPart string // "" when the session must start
	}{
		{"missing: created", func(*testing.T, string) {}, ""},
		{"empty: used", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"holding a file: refused", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is not empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			tc.prepare(t, dir)
			f := newFakeCluster(t, dep)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := Start(ctx, Options{Config: f.cfg, Client: ctxClientset{f.cs}, Namespace: "ns", Image: "podshim:test",
				From: &Target{Kind: "deployments", Name: "api"}, Mount: dir, EnvSyntax: "docker", Quiet: true})
			if s != nil {
				defer s.Close()
			}
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) || !strings.Contains(err.Error(), dir) {
					t.Fatalf("Start = %v, want an error naming %s and containing %q", err, dir, tc.errPart)
				}
				if b, rerr := os.ReadFile(filepath.Join(dir, "notes.txt")); rerr != nil || string(b) != "mine" {
					t.Errorf("the user's file was touched: %q, %v", b, rerr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
				t.Fatalf("DIR has mode %v, want a 0700 directory", fi.Mode())
			}
			if _, err := os.Stat(filepath.Join(dir, vol, "config.yaml")); err != nil {
				t.Errorf("no copy in DIR: %v", err)
			}
		})
	}
}
